"""The alarm and position API (GB/T 28181-2016 §9.4, §9.5, §9.10): list, read, purge alarms and their
snapshots, ask a device for its alarm history, a device's positions and its track as GeoJSON
(RFC 7946), a channel's snapshot-on-alarm setting.

``AlarmRoutes`` is mounted into the root API (``gbplatform.api.app``); the
work is ``gbplatform.alarms.service.AlarmService``'s, the rows
``gbplatform.alarms.store``'s. docs/alarms.md is the user's guide.
"""

from __future__ import annotations

import datetime as dt

from klein import Klein
from msgspec import UNSET
from twisted.web.server import Request

from gbplatform.alarms import shapes, store
from gbplatform.alarms.service import AlarmService, snapshot_url
from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated, set_header
from gbplatform.core.clock import utc_datetime
from gbplatform.core.errors import NotFound as Missing
from gbplatform.db import queries as q

__all__ = ["AlarmRoutes"]

JPEG_TYPE = b"image/jpeg"


def _iso(value: dt.datetime | None) -> str | None:
    return schemas.iso(value)


def alarm_json(record: store.AlarmRecord) -> shapes.Alarm:
    return shapes.Alarm(
        id=record.id, device_id=record.device_id, channel_id=record.channel_id, priority=record.priority,
        method=record.method, type=record.alarm_type, event_type=record.event_type, time=_iso(record.device_time),
        received_at=schemas.iso(record.received_at), longitude=record.longitude, latitude=record.latitude,
        description=record.description, source=record.source,
        snapshot_url=None if record.snapshot is None else snapshot_url(record.id),
        snapshot_error=record.snapshot_error,
    )


def position_json(record: store.PositionRecord) -> shapes.Position:
    return shapes.Position(
        device_id=record.device_id, channel_id=record.channel_id, time=schemas.iso(record.time),
        received_at=schemas.iso(record.received_at), longitude=record.longitude, latitude=record.latitude,
        speed=record.speed, direction=record.direction, altitude=record.altitude)


def track_json(records: list[store.PositionRecord], total: int, *, points: bool) -> shapes.Track:
    """Per source (in order), a LineString of its positions (a Point for a lone one), then with ``points`` a
    Point per position (RFC 7946 §3.1.2, §3.1.4; ``[longitude, latitude]``, §3.1.1)."""
    by_source: dict[str, list[store.PositionRecord]] = {}
    for record in records:
        by_source.setdefault(record.channel_id, []).append(record)
    features: list[shapes.TrackFeature] = []
    for channel_id, track in by_source.items():
        device_id = track[0].device_id
        if len(track) > 1:
            features.append(shapes.TrackFeature(
                geometry=shapes.GeoLineString(coordinates=[[p.longitude, p.latitude] for p in track]),
                properties=shapes.TrackProperties(
                    device_id=device_id, channel_id=channel_id, times=[schemas.iso(p.time) for p in track],
                    speeds=[p.speed for p in track], directions=[p.direction for p in track],
                    altitudes=[p.altitude for p in track])))
        if points or len(track) == 1:
            features.extend(shapes.TrackFeature(
                geometry=shapes.GeoPoint(coordinates=[p.longitude, p.latitude]),
                properties=shapes.TrackProperties(
                    device_id=device_id, channel_id=channel_id, time=schemas.iso(p.time), speed=p.speed,
                    direction=p.direction, altitude=p.altitude)) for p in track)
    return shapes.Track(features=features, total=total)


def _time(args: schemas.Args, name: str) -> dt.datetime | None:
    if not args.get(name.encode()) or not args[name.encode()][-1]:
        return None
    return utc_datetime(schemas.parse_time_arg(args, name))


def _body_time(name: str, value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise schemas.ValidationError(name, f"expected ISO 8601, got {value[:40]!r}") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


class AlarmRoutes(Routes):
    """``/api/v1/alarms``, ``/api/v1/alarms/<id>``, ``.../snapshot.jpg``, ``/api/v1/devices/<id>/alarms/query``,
    ``/position``, ``/track``, ``/api/v1/channels/<id>/alarm-settings``."""

    app = Klein()

    @property
    def alarms(self) -> AlarmService:
        service = self.platform.alarms
        if service is None:  # build_platform always sets one; a hand-made context may not
            raise RuntimeError("this platform has no alarm service")
        return service

    @app.route("/api/v1/alarms", methods=["GET"])
    @authenticated
    async def list_alarms(self, request: Request) -> bytes:
        args = request.args
        paging = schemas.parse_paging(args)
        start, end = _time(args, "start"), _time(args, "end")
        if start is not None and end is not None and end <= start:
            raise schemas.ValidationError("end", "must be after start")
        cursor = schemas.int_arg(args, "cursor", 0, 0, schemas.INT64_MAX)
        where = store.AlarmFilter(
            device_id=schemas.str_arg(args, "device_id", 64), channel_id=schemas.str_arg(args, "channel_id", 64),
            start=start, end=end,
            priority=schemas.int_arg(args, "priority", 0, 1, 4) or None,
            method=schemas.int_arg(args, "method", 0, 1, 7) or None,
            alarm_type=None if not schemas.str_arg(args, "type", 8) else schemas.int_arg(args, "type", 0, 0, 9999),
        )
        items, total = await self.platform.db.run(
            "list_alarms", store.list_alarms_txn, where, limit=paging.limit, offset=paging.offset,
            before_id=cursor or None)
        more = len(items) == paging.limit and items[-1].id > 1
        return self._json(request, shapes.AlarmPage(
            items=[alarm_json(a) for a in items], total=total, offset=paging.offset, limit=paging.limit,
            next_cursor=items[-1].id if more else None))

    @app.route("/api/v1/alarms", methods=["DELETE"])
    @authenticated
    async def purge_alarms(self, request: Request) -> bytes:
        before = utc_datetime(schemas.parse_time_arg(request.args, "before"))
        deleted = await self.alarms.delete_alarms_before(before)
        return self._json(request, shapes.AlarmPurgeResult(deleted=deleted))

    async def _alarm(self, alarm_id: int) -> store.AlarmRecord:
        record: store.AlarmRecord | None = await self.platform.db.run(
            "get_alarm", store.get_alarm_txn, schemas.path_id("alarm_id", alarm_id))
        if record is None:
            raise Missing(f"alarm {alarm_id} not found")
        return record

    @app.route("/api/v1/alarms/<int:alarm_id>", methods=["GET"])
    @authenticated
    async def get_alarm(self, request: Request, alarm_id: int) -> bytes:
        return self._json(request, alarm_json(await self._alarm(alarm_id)))

    @app.route("/api/v1/alarms/<int:alarm_id>/snapshot.jpg", methods=["GET"])
    async def alarm_snapshot(self, request: Request, alarm_id: int) -> bytes:
        # An <img> cannot set headers: the API token may come as ?token= (RFC 6750 §2.3).
        self.authorize(request, query_token=True)
        record = await self._alarm(alarm_id)
        if record.snapshot is None:
            raise Missing(f"alarm {alarm_id} has no snapshot"
                          + (f" ({record.snapshot_error})" if record.snapshot_error else ""))
        path = self.alarms.snapshot_path(record.snapshot)
        try:
            jpeg: bytes = await self.alarms.blocking()(path.read_bytes)
        except FileNotFoundError:
            raise Missing(f"alarm {alarm_id}: its snapshot file is gone") from None
        request.setResponseCode(200)
        set_header(request, b"Content-Type", JPEG_TYPE)
        set_header(request, b"Cache-Control", b"private, max-age=86400")
        return jpeg

    @app.route("/api/v1/devices/<device_id>/alarms/query", methods=["POST"])
    @authenticated
    async def query_alarms(self, request: Request, device_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.AlarmQueryBody)
        start = None if body.start is UNSET else _body_time("start", body.start)
        end = None if body.end is UNSET else _body_time("end", body.end)
        if start is not None and end is not None and end <= start:
            raise schemas.ValidationError("end", "must be after start")
        device_id = await self.platform.control.device(device_id)  # 404 unknown, 409 offline
        answer = await self.alarms.query(
            device_id, start_priority=None if body.start_priority is UNSET else body.start_priority,
            end_priority=None if body.end_priority is UNSET else body.end_priority,
            method=None if body.method is UNSET else body.method,
            alarm_type=None if body.type is UNSET else str(body.type), start=start, end=end)
        return self._json(request, shapes.AlarmQueryResult(
            device_id=answer.device_id, result=answer.result, sum_num=answer.sum_num, complete=answer.complete,
            items=[alarm_json(a) for a in answer.alarms]))

    async def _device(self, device_id: str) -> str:
        if await self.platform.db.run("get_device", q.get_device_txn, device_id) is None:
            raise Missing(f"device {device_id} not found")
        return device_id

    @app.route("/api/v1/devices/<device_id>/position", methods=["GET"])
    @authenticated
    async def position(self, request: Request, device_id: str) -> bytes:
        await self._device(device_id)
        latest = await self.platform.db.run("latest_positions", store.latest_positions_txn, device_id)
        return self._json(request, shapes.PositionList(device_id=device_id, items=[position_json(p) for p in latest]))

    @app.route("/api/v1/devices/<device_id>/track", methods=["GET"])
    @authenticated
    async def track(self, request: Request, device_id: str) -> bytes:
        args = request.args
        start, end = schemas.parse_time_range(args)
        limit = schemas.int_arg(args, "limit", shapes.DEFAULT_TRACK_LIMIT, 2, shapes.MAX_TRACK_LIMIT)
        points = bool(schemas.bool_arg(args, "points"))
        channel_id = schemas.str_arg(args, "channel_id", 64)
        await self._device(device_id)
        records, total = await self.platform.db.run(
            "track", store.track_txn, device_id, utc_datetime(start), utc_datetime(end), channel_id=channel_id,
            limit=limit)
        return self._json(request, track_json(records, total, points=points))

    @app.route("/api/v1/channels/<channel_id>/alarm-settings", methods=["PUT"])
    @authenticated
    async def alarm_settings(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.AlarmSettingsBody)
        db = self.platform.db
        if (await db.run("get_channel", q.get_channel_txn, channel_id) is None
                and await db.run("get_device", q.get_device_txn, channel_id) is None):
            raise Missing(f"channel {channel_id} not found")
        await db.run("set_alarm_setting", store.set_alarm_setting_txn, channel_id, body.snapshot, self._at())
        effective = self.platform.config.alarms.snapshot if body.snapshot is None else body.snapshot
        return self._json(request, shapes.AlarmSettings(channel_id=channel_id, snapshot=body.snapshot,
                                                        effective=effective))
