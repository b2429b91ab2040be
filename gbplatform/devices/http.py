"""The devices' API: the registry (devices, channels, tree), catalog sync,
live queries (DeviceInfo, DeviceStatus), the SIP trace and the brute-force bans.

``DeviceRoutes`` is mounted into the root API (``gbplatform.api.app``).
Registration itself is SIP (``gbplatform.devices.registrar``, GB/T
28181-2016 §9.1); these routes are how an operator onboards a device
before it registers (its ID and digest password, §9.1.2.1) and reads what
it reported. Catalog sync and the live queries are MANSCDP queries
(§9.5.3, A.2.4): they need a registered device, so an unknown one is a 404
and a known one that is offline a 409. ``PUT .../dialect`` sets which edition
of GB/T 28181 the platform speaks to a device (2016 or 2022, else what its
REGISTER announced, GB/T 28181-2022 §9.1) and its I-frame element's spelling.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, cast

from klein import Klein
from msgspec import UNSET
from twisted.logger import Logger
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated, set_header
from gbplatform.core.errors import DeviceOffline
from gbplatform.core.errors import NotFound as Missing
from gbplatform.db import queries as q
from gbplatform.db.database import Session, read_only
from gbplatform.devices import shapes
from sip.manscdp.dialects import IFRAME_ELEMENTS

__all__ = ["DeviceRoutes"]

log = Logger()


# Thin *_txn wrappers: the create/update ones unpack the parsed body; in the
# read ones the existence check and the read share one transaction, so "no
# such device" and "device without channels" cannot be confused.


def _create_txn(session: Session, device_id: str, changes: schemas.DeviceChanges, *, realm: str,
                at: dt.datetime) -> q.DeviceRecord:
    # Digest HA1 for the realm devices authenticate in (GB/T 28181-2016 §9.1.2.1).
    return q.create_device_txn(session, device_id, password=changes.password,
                               realm=realm if changes.password is not None else None, at=at, **changes.fields)


def _update_txn(session: Session, device_id: str, changes: schemas.DeviceChanges, *, realm: str,
                at: dt.datetime) -> q.DeviceRecord:
    return q.update_device_txn(session, device_id, password=changes.password,
                               realm=realm if changes.password is not None else None,
                               clear_password=changes.clear_password, at=at, **changes.fields)


@read_only
def _channels_txn(session: Session, device_id: str, *, parent_id: str | None, offset: int,
                  limit: int) -> q.Page[q.ChannelRecord]:
    if q.get_device_txn(session, device_id) is None:
        raise q.DeviceNotFound(device_id)
    return q.list_channels_txn(session, device_id, offset=offset, limit=limit, parent_id=parent_id)


def parse_dialect(obj: dict[str, Any]) -> shapes.DialectBody:
    """``PUT /devices/{id}/dialect``'s body: any case of the choices, the version also as a number
    (``2022``); at least one field."""
    canonical = dict(obj)
    version = obj.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        canonical["version"] = str(version)
    elif isinstance(version, str):
        canonical["version"] = version.strip().lower()
    element = obj.get("iframe_element")
    if isinstance(element, str):
        canonical["iframe_element"] = _IFRAME_SPELLINGS.get(element.strip().lower(), element)
    body = schemas.parse_body(canonical, shapes.DialectBody, shapes.DIALECT_MESSAGES)
    if body.version is UNSET and body.iframe_element is UNSET:
        raise schemas.ValidationError("version", "give at least one of version, iframe_element")
    return body


_IFRAME_SPELLINGS: Final = {name.lower(): name for name in IFRAME_ELEMENTS}


@read_only
def _tree_txn(session: Session, device_id: str, *, platform_id: str) -> list[q.TreeNode]:
    if q.get_device_txn(session, device_id) is None:
        raise q.DeviceNotFound(device_id)
    return q.channel_tree_txn(session, device_id, platform_id=platform_id)



class DeviceRoutes(Routes):
    """``/api/v1/devices/...`` and ``/api/v1/security/bans``."""

    app = Klein()

    def _device_json(self, record: q.DeviceRecord) -> shapes.Device:
        p = self.platform
        return schemas.device_json(
            record, p.devices.live_info(record.device_id), now=p.clock.seconds(), wall=p.clock.time(),
            catalog=p.catalog.progress(record.device_id),
        )

    async def _record(self, device_id: str) -> q.DeviceRecord:
        record = await self.platform.db.run("get_device", q.get_device_txn, device_id)
        if record is None:
            raise q.DeviceNotFound(device_id)
        return record

    async def _require_online(self, device_id: str) -> None:
        """404 for an unknown device, 409 for a known one that is not registered."""
        if self.platform.devices.is_known(device_id):
            return
        await self._record(device_id)
        raise DeviceOffline(f"device {device_id} is not registered")


    # -- devices ---------------------------------------------------------------
    @app.route("/api/v1/devices", methods=["GET"])
    @authenticated
    async def list_devices(self, request: Request) -> bytes:
        query = schemas.parse_device_list(request.args)
        page = await self.platform.db.run(
            "list_devices", q.list_devices_txn, online=query.online, q=query.q,
            offset=query.paging.offset, limit=query.paging.limit,
        )
        return self._json(request, schemas.page_json(page, self._device_json, shapes.DevicePage))

    @app.route("/api/v1/devices", methods=["POST"])
    @authenticated
    async def create_device(self, request: Request) -> bytes:
        p = self.platform
        create = schemas.parse_device_create(self._body(request), strict_id=p.config.sip.strict_id)
        changes = create.changes
        record = await p.db.run("create_device", _create_txn, create.device_id, changes,
                                realm=p.config.sip.domain, at=self._at())
        # The registrar may have cached "unknown device" from an earlier REGISTER.
        p.devices.invalidate(create.device_id)
        log.info("device {device_id} added through the API", device_id=create.device_id)
        set_header(request, b"Location", f"/api/v1/devices/{create.device_id}".encode())
        return self._json(request, self._device_json(record), 201)

    @app.route("/api/v1/devices/<device_id>", methods=["GET"])
    @authenticated
    async def get_device(self, request: Request, device_id: str) -> bytes:
        return self._json(request, self._device_json(await self._record(device_id)))

    @app.route("/api/v1/devices/<device_id>", methods=["PATCH"])
    @authenticated
    async def update_device(self, request: Request, device_id: str) -> bytes:
        p = self.platform
        changes = schemas.parse_device_patch(self._body(request))
        if changes.empty:
            record = await self._record(device_id)
        else:
            record = await p.db.run("update_device", _update_txn, device_id, changes,
                                    realm=p.config.sip.domain, at=self._at())
            p.devices.invalidate(device_id)
        return self._json(request, self._device_json(record))

    @app.route("/api/v1/devices/<device_id>", methods=["DELETE"])
    @authenticated
    async def delete_device(self, request: Request, device_id: str) -> bytes:
        p = self.platform
        await p.db.run("delete_device", q.delete_device_txn, device_id)
        p.devices.forget(device_id)
        p.catalog.forget(device_id)
        if p.subscriptions is not None:
            p.subscriptions.forget(device_id)  # unsubscribed, its settings dropped from memory
        log.info("device {device_id} deleted through the API", device_id=device_id)
        request.setResponseCode(204)
        return b""

    # -- dialect: GB/T 28181-2016 or -2022 (gbplatform/devices/registrar.py gb_version) --------
    @app.route("/api/v1/devices/<device_id>/dialect", methods=["PUT"])
    @authenticated
    async def set_dialect(self, request: Request, device_id: str) -> bytes:
        p = self.platform
        body = parse_dialect(self._body(request))
        version = None if body.version is UNSET else body.version
        iframe_element = None if body.iframe_element is UNSET else body.iframe_element
        record = await p.db.run("set_dialect", q.set_dialect_txn, device_id, version=version,
                                iframe_element=iframe_element, at=self._at())
        # The registry first, then memory: gb_version() answers from memory, and a REGISTER reading the
        # record meanwhile already reads the new setting.
        p.devices.set_dialect(device_id, record.gb_version_setting, record.iframe_element)
        state = shapes.DeviceDialect(device_id=device_id,
                                     **schemas.dialect_fields(record, p.devices.live_info(device_id)))
        log.info("device {device_id}: dialect set to {setting} (speaks GB/T 28181-{version}), I-frame element "
                 "{iframe}", device_id=device_id, setting=state.gb_version_setting, version=state.gb_version,
                 iframe=state.iframe_element)
        p.bus.publish("device", device_id=device_id, event="dialect", gb_version=state.gb_version,
                      gb_version_detected=state.gb_version_detected, gb_version_setting=state.gb_version_setting,
                      iframe_element=state.iframe_element)
        return self._json(request, state)

    # -- channels --------------------------------------------------------------
    @app.route("/api/v1/devices/<device_id>/channels", methods=["GET"])
    @authenticated
    async def list_channels(self, request: Request, device_id: str) -> bytes:
        query = schemas.parse_channel_list(request.args)
        page = await self.platform.db.run(
            "list_channels", _channels_txn, device_id, parent_id=query.parent_id,
            offset=query.paging.offset, limit=query.paging.limit,
        )
        return self._json(request, schemas.page_json(page, schemas.channel_json, shapes.ChannelPage))

    @app.route("/api/v1/devices/<device_id>/channels/tree", methods=["GET"])
    @authenticated
    async def channel_tree(self, request: Request, device_id: str) -> bytes:
        roots = await self.platform.db.run(
            "channel_tree", _tree_txn, device_id, platform_id=self.platform.config.sip.id
        )
        return self._json(request, schemas.tree_bytes(device_id, roots))

    # -- catalog ---------------------------------------------------------------
    @app.route("/api/v1/devices/<device_id>/catalog/sync", methods=["POST"])
    @authenticated
    async def sync_catalog(self, request: Request, device_id: str) -> bytes:
        await self._require_online(device_id)
        session = self.platform.catalog.start(device_id)
        return self._json(request, schemas.catalog_progress_json(device_id, session.progress(), None), 202)

    @app.route("/api/v1/devices/<device_id>/catalog", methods=["GET"])
    @authenticated
    async def catalog_progress(self, request: Request, device_id: str) -> bytes:
        progress = self.platform.catalog.progress(device_id)
        record = await self.platform.db.run("get_device", q.get_device_txn, device_id)
        if record is None and progress is None:
            raise q.DeviceNotFound(device_id)
        return self._json(request, schemas.catalog_progress_json(device_id, progress, record))

    # -- live queries ------------------------------------------------------------
    async def _before_query(self, device_id: str) -> None:
        await self._require_online(device_id)
        # The registry row of a device that has just registered may still be
        # in the state writer's batch; DeviceInfo is stored on it.
        pending = self.platform.devices.writer.flush()
        if pending is not None:
            await pending

    @app.route("/api/v1/devices/<device_id>/info", methods=["GET"])
    @authenticated
    async def device_info(self, request: Request, device_id: str) -> bytes:
        await self._before_query(device_id)
        return self._json(request, await self.platform.queries.device_info(device_id))

    @app.route("/api/v1/devices/<device_id>/status", methods=["GET"])
    @authenticated
    async def device_status(self, request: Request, device_id: str) -> bytes:
        await self._before_query(device_id)
        return self._json(request, await self.platform.queries.device_status(device_id))

    @app.route("/api/v1/devices/<device_id>/trace", methods=["GET"])
    @authenticated
    async def device_trace(self, request: Request, device_id: str) -> bytes:
        # No registry lookup: a device that never managed to register has a
        # trace (its refused REGISTERs) but no row, and that is when it is needed.
        limit = schemas.parse_trace_limit(request.args)
        return self._json(request, schemas.trace_json(device_id, self.platform.trace.entries(device_id, limit)))

    # -- security: digest-guessing bans (gbplatform/devices/auth_guard.py) --------------
    @app.route("/api/v1/security/bans", methods=["GET"])
    @authenticated
    async def list_bans(self, request: Request) -> bytes:
        p = self.platform
        now, wall = p.clock.seconds(), p.clock.time()
        items = [shapes.Ban(
            key=b.key, kind=cast(shapes.BanKind, b.kind), value=b.value, failures=b.failures, refused=b.refused,
            since=schemas.iso_epoch(wall - b.banned_for), until=schemas.iso_epoch(wall + b.remaining),
        ) for b in p.devices.guard.bans(now)]
        return self._json(request, shapes.BanList(items=items, stats=dict(p.devices.guard.stats)))

    @app.route("/api/v1/security/bans/<key>", methods=["DELETE"])
    @authenticated
    async def clear_ban(self, request: Request, key: str) -> bytes:
        if not self.platform.devices.guard.clear(key):
            raise Missing(f"no ban on {key[:80]!r}")
        log.info("ban on {key} lifted through the API", key=key)
        request.setResponseCode(204)
        return b""
