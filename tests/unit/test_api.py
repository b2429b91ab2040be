"""HTTP API tests: ``StubTreq`` over the Klein resource, an in-memory SQLite
registry on an ``InlineRunner``, a ``FakeClock``, and a fake device answering
the platform's SIP MESSAGEs through ``platform.endpoint``."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import av
import pytest
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Request as WebRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyChannel

from gbplatform.api import schemas
from gbplatform.api.app import Api
from gbplatform.app.config import Config
from gbplatform.app.context import AppContext
from gbplatform.app.service import build_platform
from gbplatform.core.clock import FakeClock
from gbplatform.core.errors import DeviceOffline, DeviceRejected, DeviceTimeout
from gbplatform.db import queries as q
from gbplatform.db.database import Database, InlineRunner, make_engine
from gbplatform.db.models import metadata
from gbplatform.devices.registrar import AuthInfo, DeviceLive
from gbplatform.sessions.live import NoPorts
from media.flv import FlvSink
from media.frame import Codec, Frame
from media.pipeline import FrameDispatcher, GopCache
from sip import manscdp
from sip.message import Request, make_response
from sip.parser import parse_datagram
from tests.unit.test_media_snapshot import capture_frames

TOKEN = "t"
ROOT = "http://gbp.test"
BASE = ROOT + "/api/v1"
DEV = "34020000001320000001"
OTHER = "34020000001320000002"
CAM1 = "34020000001310000001"
CAM2 = "34020000001310000002"
DEVICE_ADDR = ("UDP", "192.0.2.10", 5062)
WALL0 = "2023-11-14T22:13:20.000Z"  # FakeClock.DEFAULT_WALL_START


# --- harness ----------------------------------------------------------------


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def fired(d: Deferred[Any]) -> bool:
    box: list[Any] = []

    def seen(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(seen)
    return bool(box)


def call(platform: AppContext, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return result_of(platform.db.run(fn.__name__, fn, *args, **kwargs))


@dataclass
class Reply:
    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class Client:
    """Synchronous calls over StubTreq; ``start``/``finish`` for routes that
    wait for a device."""

    def __init__(self, api: Api) -> None:
        self.stub: Any = StubTreq(api.app.resource())  # type: ignore[no-untyped-call]

    def start(self, method: str, path: str, *, token: str | None = TOKEN, body: Any = None,
              raw: bytes | None = None, headers: dict[str, str] | None = None) -> Deferred[Any]:
        h = dict(headers or {})
        if token is not None:
            h.setdefault("Authorization", f"Bearer {token}")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        url = path if path.startswith("http") else BASE + path  # absolute for /live/..., outside /api/v1
        d: Deferred[Any] = self.stub.request(method, url, headers=h, data=data)
        return d

    def finish(self, d: Deferred[Any]) -> Reply:
        self.stub.flush()
        response = result_of(d)
        content = self.stub.content(response)
        self.stub.flush()
        reply = Reply(response.code, response.headers, result_of(content))
        if reply.code != 204:
            assert reply.header("Content-Type") == "application/json; charset=utf-8"
        return reply

    def __call__(self, method: str, path: str, **kw: Any) -> Reply:
        return self.finish(self.start(method, path, **kw))


def make_platform(config: Config | None = None) -> tuple[AppContext, FakeClock]:
    engine = make_engine("sqlite://")
    metadata.create_all(engine)
    db = Database(engine, pool=InlineRunner())
    clock = FakeClock()
    platform = build_platform(config or Config(), clock=clock, db=db, rng=random.Random(1),
                              api_token=TOKEN, secret=b"s")
    return platform, clock


@dataclass
class Env:
    platform: AppContext
    clock: FakeClock
    api: Api
    client: Client


@pytest.fixture
def env() -> Iterator[Env]:
    platform, clock = make_platform()
    api = Api(platform)
    yield Env(platform, clock, api, Client(api))
    platform.db.engine.dispose()


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert reply.code == status, reply.body
    body = reply.json
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error.get("field") == field
    return error


class FakeDevice:
    """A registered device: answers the platform's MESSAGEs and sends its own."""

    def __init__(self, platform: AppContext, clock: FakeClock, device_id: str = DEV) -> None:
        self.platform = platform
        self.clock = clock
        self.device_id = device_id
        self.cseq = 0

    def register(self) -> DeviceLive:
        now, wall = self.clock.seconds(), self.clock.time()
        live = DeviceLive(
            device_id=self.device_id, addr=DEVICE_ADDR, contact=f"sip:{self.device_id}@192.0.2.10:5062",
            user_agent="IP Camera 1.0", expires_at=now + 3600, last_seen=now, interval=60, count=3,
            registered_wall=wall,
        )
        self.platform.devices.live[self.device_id] = live
        return live

    def _feed(self, data: bytes) -> None:
        p = self.platform
        p.router.handle_events(p.endpoint.receive_datagram(data, DEVICE_ADDR, self.clock.seconds()))

    def take_request(self) -> Request:
        out = self.platform.endpoint.take_output()
        assert len(out) == 1, out
        data, dest = out[0]
        assert dest == DEVICE_ADDR
        req = parse_datagram(data)
        assert isinstance(req, Request) and req.method == "MESSAGE"
        return req

    def answer(self, status: int = 200) -> manscdp.ManscdpMessage:
        """Answer the platform's pending MESSAGE; returns the query it carried."""
        req = self.take_request()
        self._feed(make_response(req, status, to_tag="dev1").serialize())
        return manscdp.decode(req.body)

    def send(self, body: bytes) -> None:
        """Send a MESSAGE (a Response to a query) to the platform."""
        self.cseq += 1
        m = Request(method="MESSAGE", uri=f"sip:{self.platform.config.sip.id}@{self.platform.config.sip.domain}")
        for name, value in [
            ("Via", f"SIP/2.0/UDP 192.0.2.10:5062;rport;branch=z9hG4bKdev{self.cseq}"),
            ("From", f"<sip:{self.device_id}@{self.platform.config.sip.domain}>;tag=d{self.cseq}"),
            ("To", f"<sip:{self.platform.config.sip.id}@{self.platform.config.sip.domain}>"),
            ("Call-ID", f"dev-call-{self.cseq}"),
            ("CSeq", f"{self.cseq} MESSAGE"),
            ("Max-Forwards", "70"),
            ("Content-Type", "Application/MANSCDP+xml"),
        ]:
            m.headers.add(name, value)
        m.body = body
        self._feed(m.serialize())
        answers = self.platform.endpoint.take_output()
        assert answers and answers[0][0].startswith(b"SIP/2.0 200"), answers


def add_device(env: Env, device_id: str = DEV, **body: Any) -> dict[str, Any]:
    reply = env.client("POST", "/devices", body={"device_id": device_id, **body})
    assert reply.code == 201, reply.body
    return reply.json  # type: ignore[no-any-return]


def channel(channel_id: str, **kw: Any) -> q.ChannelData:
    return q.ChannelData(channel_id=channel_id, **kw)


# --- authentication -----------------------------------------------------------


def concrete_routes(api: Api) -> list[tuple[str, str]]:
    routes = []
    for rule in api.app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", DEV, rule.rule)
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path.removeprefix("/api/v1") if path.startswith("/api/v1") else ROOT + path))
    return routes


def test_health_needs_no_token_and_no_database(env: Env) -> None:
    def no_db(*a: Any, **kw: Any) -> Any:
        raise AssertionError("health must not touch the database")

    env.platform.db.run = no_db  # type: ignore[method-assign]
    FakeDevice(env.platform, env.clock).register()
    env.clock.advance(12.5)
    reply = env.client("GET", "/health", token=None)
    assert reply.code == 200
    body = reply.json
    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["uptime"] == 12.5
    assert body["devices_online"] == 1
    assert body["sip"]["transactions"] == 0
    assert body["sip"]["stats"]["received"] == 0
    assert body["sip"]["registrar"]["registered"] == 0


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer", "Basic dDp0", "t", "Bearer tt", "Bearer T"])
def test_every_route_but_health_refuses_a_missing_or_wrong_token(env: Env, header: str | None) -> None:
    add_device(env)
    routes = concrete_routes(env.api)
    assert len(routes) == 90
    for method, path in routes:
        if path == "/health" or path.startswith("/snapshot-uploads/"):
            continue  # a device's snapshot upload carries its session's token, never the API token
        headers = {"Authorization": header} if header is not None else {}
        reply = env.client(method, path, token=None, headers=headers, body={} if method in ("POST", "PATCH") else None)
        assert_error(reply, 401, "unauthorized")
        challenge = reply.header("WWW-Authenticate")
        assert challenge is not None and challenge.startswith('Bearer realm="gbplatform"')
        assert ("invalid_token" in challenge) == (header is not None)
    # Nothing was changed by the refused calls.
    assert env.client("GET", f"/devices/{DEV}").code == 200


def test_right_token_is_accepted_with_any_scheme_case(env: Env) -> None:
    assert env.client("GET", "/devices").code == 200
    reply = env.client("GET", "/devices", token=None, headers={"Authorization": "bearer t"})
    assert reply.code == 200


def test_an_empty_configured_token_never_matches() -> None:
    platform, _ = make_platform()
    platform.api_token = ""
    client = Client(Api(platform))
    assert_error(client("GET", "/devices", token=None, headers={"Authorization": "Bearer "}), 401, "unauthorized")
    assert client("GET", "/health", token=None).code == 200


# --- routing errors -------------------------------------------------------------


def test_unknown_route_is_a_json_404(env: Env) -> None:
    error = assert_error(env.client("GET", "/nothing/here"), 404, "not_found")
    assert "/api/v1/nothing/here" in error["message"]
    assert_error(env.client("GET", "/devices/", token=None), 404, "not_found")


def test_wrong_method_is_a_json_405_with_allow(env: Env) -> None:
    reply = env.client("PUT", "/devices")
    assert_error(reply, 405, "method_not_allowed")
    assert reply.header("Allow") == "GET, POST"
    reply = env.client("POST", f"/devices/{DEV}")
    assert_error(reply, 405, "method_not_allowed")
    assert reply.header("Allow") == "DELETE, GET, PATCH"
    assert_error(env.client("DELETE", "/health"), 405, "method_not_allowed")


def test_unexpected_error_is_logged_and_no_traceback_leaks(env: Env) -> None:
    def broken(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("secret connection string postgres://admin:pw@db")

    env.platform.db.run = broken  # type: ignore[method-assign]
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        reply = env.client("GET", "/devices")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert_error(reply, 500, "internal_error")
    assert b"secret" not in reply.body and b"Traceback" not in reply.body
    logged = [e for e in events if "log_failure" in e and e.get("path") == "/api/v1/devices"]
    assert logged and logged[0]["log_failure"].check(RuntimeError)


# --- devices: create --------------------------------------------------------------


def test_create_device_returns_201_and_stores_only_the_ha1(env: Env) -> None:
    env.platform.devices.auth_cache[DEV] = AuthInfo(exists=False)
    reply = env.client("POST", "/devices", body={
        "device_id": DEV, "name": "大门 camera", "password": "12345678", "charset": "utf-8",
        "media_transport": "tcp-passive", "stream_index": "1", "enabled": True,
    })
    assert reply.code == 201
    assert reply.header("Location") == f"/api/v1/devices/{DEV}"
    device = reply.json
    assert device["device_id"] == DEV
    assert device["name"] == "大门 camera"
    assert device["pre_added"] is True and device["enabled"] is True
    assert device["online"] is False
    assert device["has_password"] is True
    assert device["charset"] == "UTF-8"
    assert device["media_transport"] == "TCP-PASSIVE"
    assert device["stream_index"] == "streamnumber:1"
    assert device["created_at"] == device["updated_at"] == WALL0
    assert device["catalog"] == {"status": "idle", "total": 0, "received": 0, "synced_at": None, "error": None}
    assert device["channel_count"] == 0
    assert device["address"] is None
    assert "password" not in device and "12345678" not in reply.body.decode()
    assert not any("ha1" in key for key in device)
    record = call(env.platform, q.get_device_txn, DEV)
    md5, sha = q.digest_ha1(DEV, env.platform.config.sip.domain, "12345678")
    assert (record.password_ha1_md5, record.password_ha1_sha256, record.ha1_realm) == (md5, sha, "3402000000")
    assert DEV not in env.platform.devices.auth_cache  # the registrar re-reads it


def test_create_minimal_device_has_no_password(env: Env) -> None:
    device = add_device(env, password=None)
    assert device["has_password"] is False
    assert device["name"] is None
    assert device["charset"] == "GB2312" and device["media_transport"] == "UDP"


def test_create_existing_device_is_409(env: Env) -> None:
    add_device(env)
    assert_error(env.client("POST", "/devices", body={"device_id": DEV}), 409, "device_exists")


@pytest.mark.parametrize(("body", "field"), [
    ({}, "device_id"),
    ({"device_id": 34020000001320000001}, "device_id"),
    ({"device_id": "3402000000132000000"}, "device_id"),
    ({"device_id": "3402000000132000000a"}, "device_id"),
    ({"device_id": DEV, "charset": "BIG5"}, "charset"),
    ({"device_id": DEV, "charset": None}, "charset"),
    ({"device_id": DEV, "media_transport": "RTSP"}, "media_transport"),
    ({"device_id": DEV, "enabled": "yes"}, "enabled"),
    ({"device_id": DEV, "name": 5}, "name"),
    ({"device_id": DEV, "name": "x" * 129}, "name"),
    ({"device_id": DEV, "name": "bad\nname"}, "name"),
    ({"device_id": DEV, "password": ""}, "password"),
    ({"device_id": DEV, "password": 12345678}, "password"),
    ({"device_id": DEV, "stream_index": "a b"}, "stream_index"),
    ({"device_id": DEV, "pasword": "x"}, "pasword"),
    ({"device_id": DEV, "online": True}, "online"),
])
def test_create_device_validation_names_the_field(env: Env, body: dict[str, Any], field: str) -> None:
    error = assert_error(env.client("POST", "/devices", body=body), 400, "invalid", field)
    assert error["message"].startswith(f"{field}: ")
    assert call(env.platform, q.get_device_txn, DEV) is None


@pytest.mark.parametrize(("raw", "code"), [
    (b"", "bad_json"),
    (b"{not json", "bad_json"),
    (b"[1, 2]", "bad_json"),
    (b'"device"', "bad_json"),
    (b"\xff\xfe{}", "bad_json"),
])
def test_bad_json_body_is_400(env: Env, raw: bytes, code: str) -> None:
    assert_error(env.client("POST", "/devices", raw=raw), 400, code)
    assert_error(env.client("PATCH", f"/devices/{DEV}", raw=raw), 400, code)


def test_oversized_body_is_413(env: Env) -> None:
    raw = json.dumps({"device_id": DEV, "name": "x" * schemas.MAX_BODY}).encode()
    assert_error(env.client("POST", "/devices", raw=raw), 413, "payload_too_large")


def test_non_strict_ids_are_accepted_when_configured() -> None:
    config = Config()
    platform, _ = make_platform(replace(config, sip=replace(config.sip, strict_id=False)))
    client = Client(Api(platform))
    reply = client("POST", "/devices", body={"device_id": "lab-cam.1"})
    assert reply.code == 201 and reply.json["device_id"] == "lab-cam.1"
    assert_error(client("POST", "/devices", body={"device_id": "has space"}), 400, "invalid", "device_id")
    assert_error(client("POST", "/devices", body={"device_id": "x" * 33}), 400, "invalid", "device_id")


# --- devices: read, update, delete -------------------------------------------------


def test_get_device_and_404(env: Env) -> None:
    add_device(env, name="gate")
    reply = env.client("GET", f"/devices/{DEV}")
    assert reply.code == 200 and reply.json["name"] == "gate"
    error = assert_error(env.client("GET", f"/devices/{OTHER}"), 404, "not_found")
    assert OTHER in error["message"]


def test_device_json_prefers_live_state(env: Env) -> None:
    add_device(env)
    env.clock.advance(10)
    live = FakeDevice(env.platform, env.clock).register()
    env.clock.advance(5)
    live.last_keepalive_wall = env.clock.time()
    device = env.client("GET", f"/devices/{DEV}").json
    assert device["online"] is True
    assert (device["transport"], device["host"], device["port"]) == ("UDP", "192.0.2.10", 5062)
    assert device["address"] == "192.0.2.10:5062"
    assert device["contact"] == f"sip:{DEV}@192.0.2.10:5062"
    assert device["user_agent"] == "IP Camera 1.0"
    assert device["registered_at"] == "2023-11-14T22:13:30.000Z"
    assert device["register_expires_at"] == "2023-11-14T23:13:30.000Z"
    assert device["last_keepalive_at"] == "2023-11-14T22:13:35.000Z"
    live.online = False
    assert env.client("GET", f"/devices/{DEV}").json["online"] is False


def test_device_json_from_registry_when_not_live(env: Env) -> None:
    add_device(env)
    at = dt.datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)
    call(env.platform, q.device_registered_txn, DEV, host="2001:db8::1", port=5060, transport="TCP",
         contact=None, user_agent="NVR", expires=3600, at=at)
    device = env.client("GET", f"/devices/{DEV}").json
    assert device["online"] is True
    assert device["address"] == "[2001:db8::1]:5060"
    assert device["registered_at"] == "2024-05-01T08:00:00.123Z"
    assert device["online_at"] == "2024-05-01T08:00:00.123Z"
    assert device["register_expires_at"] == "2024-05-01T09:00:00.123Z"
    assert device["last_keepalive_at"] is None


def test_patch_device_fields(env: Env) -> None:
    add_device(env, name="old")
    env.platform.devices.auth_cache[DEV] = AuthInfo(exists=True)
    env.clock.advance(60)
    reply = env.client("PATCH", f"/devices/{DEV}", body={"name": "new", "enabled": False, "charset": "GBK"})
    assert reply.code == 200
    device = reply.json
    assert (device["name"], device["enabled"], device["charset"]) == ("new", False, "GBK")
    assert device["updated_at"] == "2023-11-14T22:14:20.000Z"
    assert device["created_at"] == WALL0
    assert DEV not in env.platform.devices.auth_cache


def test_patch_sets_and_clears_the_password(env: Env) -> None:
    add_device(env)
    assert env.client("PATCH", f"/devices/{DEV}", body={"password": "s3cret"}).json["has_password"] is True
    record = call(env.platform, q.get_device_txn, DEV)
    assert record.password_ha1_md5 == q.digest_ha1(DEV, "3402000000", "s3cret")[0]
    assert record.ha1_realm == "3402000000"
    assert env.client("PATCH", f"/devices/{DEV}", body={"name": "x"}).json["has_password"] is True
    assert env.client("PATCH", f"/devices/{DEV}", body={"password": None}).json["has_password"] is False
    record = call(env.platform, q.get_device_txn, DEV)
    assert (record.password_ha1_md5, record.password_ha1_sha256, record.ha1_realm) == (None, None, None)


def test_patch_with_nothing_returns_the_device_unchanged(env: Env) -> None:
    add_device(env)
    env.clock.advance(60)
    assert env.client("PATCH", f"/devices/{DEV}", body={}).json["updated_at"] == WALL0


def test_patch_errors(env: Env) -> None:
    add_device(env)
    assert_error(env.client("PATCH", f"/devices/{DEV}", body={"device_id": OTHER}), 400, "invalid", "device_id")
    assert_error(env.client("PATCH", f"/devices/{DEV}", body={"media_transport": 1}), 400, "invalid",
                 "media_transport")
    assert_error(env.client("PATCH", f"/devices/{DEV}", body={"enabled": None}), 400, "invalid", "enabled")
    assert_error(env.client("PATCH", f"/devices/{OTHER}", body={"name": "x"}), 404, "not_found")
    assert_error(env.client("PATCH", f"/devices/{OTHER}", body={}), 404, "not_found")


def test_delete_device_forgets_its_live_state(env: Env) -> None:
    add_device(env)
    FakeDevice(env.platform, env.clock).register()
    call(env.platform, q.replace_channels_txn, DEV, [channel(CAM1)], complete=True)
    reply = env.client("DELETE", f"/devices/{DEV}")
    assert reply.code == 204 and reply.body == b""
    assert env.platform.devices.live_info(DEV) is None
    assert_error(env.client("GET", f"/devices/{DEV}"), 404, "not_found")
    assert_error(env.client("GET", f"/devices/{DEV}/channels"), 404, "not_found")
    assert_error(env.client("DELETE", f"/devices/{DEV}"), 404, "not_found")


# --- devices: list ----------------------------------------------------------------


def test_list_devices_pages_in_id_order(env: Env) -> None:
    ids = [f"340200000013200000{i:02d}" for i in range(1, 8)]
    for device_id in reversed(ids):
        add_device(env, device_id)
    page = env.client("GET", "/devices?offset=2&limit=3").json
    assert [d["device_id"] for d in page["items"]] == ids[2:5]
    assert (page["total"], page["offset"], page["limit"]) == (7, 2, 3)
    page = env.client("GET", "/devices?offset=6").json
    assert [d["device_id"] for d in page["items"]] == ids[6:]
    assert page["limit"] == 50
    page = env.client("GET", "/devices?offset=100").json
    assert page["items"] == [] and page["total"] == 7


def test_list_devices_filters(env: Env) -> None:
    add_device(env, DEV, name="North Gate")
    add_device(env, OTHER, name="Lobby")
    call(env.platform, q.device_registered_txn, OTHER, host="192.0.2.77", port=5060, transport="UDP",
         contact=None, user_agent=None, expires=3600, at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))

    def ids(query: str) -> list[str]:
        reply = env.client("GET", "/devices" + query)
        assert reply.code == 200, reply.body
        return [d["device_id"] for d in reply.json["items"]]

    assert ids("?online=true") == [OTHER]
    assert ids("?online=false") == [DEV]
    assert ids("?q=gate") == [DEV]
    assert ids("?q=GATE&online=true") == []
    assert ids("?q=192.0.2.77") == [OTHER]
    assert ids("?q=1320000002") == [OTHER]
    assert ids("?q=%25") == []  # LIKE wildcards are escaped
    assert ids("?q=") == [DEV, OTHER]


@pytest.mark.parametrize(("query", "field"), [
    ("?limit=501", "limit"),
    ("?limit=0", "limit"),
    ("?limit=ten", "limit"),
    ("?offset=-1", "offset"),
    ("?online=maybe", "online"),
    ("?q=" + "x" * 65, "q"),
])
def test_list_devices_bad_parameters(env: Env, query: str, field: str) -> None:
    assert_error(env.client("GET", "/devices" + query), 400, "invalid", field)


def test_limit_500_is_allowed(env: Env) -> None:
    assert env.client("GET", "/devices?limit=500").json["limit"] == 500


# --- channels -------------------------------------------------------------------


def seed_catalog(env: Env) -> None:
    add_device(env)
    group = "34020000002150000001"
    org = "34020000002160000001"
    items = [
        channel(group, name="Group"),
        channel(org, name="Org", parent_id=group, business_group_id=group),
        channel(CAM1, name="Cam 1", parent_id=org, status="ON", longitude=float("nan"), latitude=31.5),
        channel(CAM2, name="Cam 2", parent_id=org, status="OFF", extra={"info": {"PTZType": "1"}}),
        channel("34020000001310000003", name="Cam 3", parent_id=f"{DEV}"),
    ]
    call(env.platform, q.replace_channels_txn, DEV, items, complete=True)


def test_list_channels_pages_and_filters(env: Env) -> None:
    seed_catalog(env)
    page = env.client("GET", f"/devices/{DEV}/channels?limit=2").json
    assert [c["channel_id"] for c in page["items"]] == [CAM1, CAM2]
    assert (page["total"], page["offset"], page["limit"]) == (5, 0, 2)
    first = page["items"][0]
    assert first["device_id"] == DEV and first["kind"] == "channel" and first["status"] == "ON"
    assert first["longitude"] is None and first["latitude"] == 31.5  # NaN is not JSON
    assert first["updated_at"].endswith("Z")
    assert "id" not in first
    assert page["items"][1]["extra"] == {"info": {"PTZType": "1"}}
    page = env.client("GET", f"/devices/{DEV}/channels?offset=2&limit=2").json
    assert [c["channel_id"] for c in page["items"]] == ["34020000001310000003", "34020000002150000001"]
    page = env.client("GET", f"/devices/{DEV}/channels?parent_id=34020000002160000001").json
    assert [c["channel_id"] for c in page["items"]] == [CAM1, CAM2] and page["total"] == 2
    assert_error(env.client("GET", f"/devices/{DEV}/channels?limit=1000"), 400, "invalid", "limit")
    assert_error(env.client("GET", f"/devices/{OTHER}/channels"), 404, "not_found")


def test_channel_tree_is_nested(env: Env) -> None:
    seed_catalog(env)
    reply = env.client("GET", f"/devices/{DEV}/channels/tree")
    assert reply.code == 200
    tree = reply.json
    assert tree["device_id"] == DEV
    roots = tree["items"]
    assert [(n["id"], n["kind"]) for n in roots] == [
        ("34020000002150000001", "business_group"), ("34020000001310000003", "channel"),
    ]
    org = roots[0]["children"][0]
    assert (org["id"], org["name"], org["kind"]) == ("34020000002160000001", "Org", "virtual_org")
    assert [(c["id"], c["status"], c["children"]) for c in org["children"]] == [(CAM1, "ON", []), (CAM2, "OFF", [])]
    assert set(roots[1]) == {"id", "name", "kind", "status", "children"}


def test_channel_tree_of_a_device_without_channels_and_404(env: Env) -> None:
    add_device(env)
    assert env.client("GET", f"/devices/{DEV}/channels/tree").json == {"device_id": DEV, "items": []}
    assert_error(env.client("GET", f"/devices/{OTHER}/channels/tree"), 404, "not_found")


def test_tree_deeper_than_the_recursion_limit_serialises() -> None:
    node = q.TreeNode("leaf", None, "channel", "ON")
    for i in range(5000):
        node = q.TreeNode(f"n{i}", f"名{i}", "virtual_org", None, [node])
    raw = schemas.tree_bytes(DEV, [node, q.TreeNode("x", None, "channel", None)])
    assert raw.startswith(b'{"device_id":"' + DEV.encode() + b'","items":[{"id":"n4999"')
    assert raw.count(b"[") == raw.count(b"]") == 5003
    assert raw.endswith(b'{"id":"x","name":null,"kind":"channel","status":null,"children":[]}]}')
    shallow = schemas.tree_bytes(DEV, [q.TreeNode("a", "A", "business_group", None, [q.TreeNode("b", None, "channel", "ON")]),
                                       q.TreeNode("c", None, "channel", None)])
    assert json.loads(shallow) == {"device_id": DEV, "items": [
        {"id": "a", "name": "A", "kind": "business_group", "status": None, "children": [
            {"id": "b", "name": None, "kind": "channel", "status": "ON", "children": []}]},
        {"id": "c", "name": None, "kind": "channel", "status": None, "children": []},
    ]}


# --- catalog --------------------------------------------------------------------


def test_catalog_sync_end_to_end(env: Env) -> None:
    add_device(env)
    device = FakeDevice(env.platform, env.clock)
    device.register()
    reply = env.client("POST", f"/devices/{DEV}/catalog/sync")
    assert reply.code == 202
    progress = reply.json
    assert progress["status"] == "running" and progress["received"] == 0 and progress["total"] == 0
    assert progress["started_at"] == WALL0
    query = device.answer()
    assert (query.kind, query.cmd_type, query.sn) == ("Query", "Catalog", progress["sn"])
    # A second POST while running returns the same session, no new query.
    assert env.client("POST", f"/devices/{DEV}/catalog/sync").json["sn"] == progress["sn"]
    assert env.platform.endpoint.take_output() == []

    items = [manscdp.CatalogItem(device_id=CAM1, name="Cam 1", status="ON"),
             manscdp.CatalogItem(device_id=CAM2, name="Cam 2", status="OFF")]
    device.send(manscdp.encode_catalog_response(query.sn, DEV, 2, items[:1]))
    running = env.client("GET", f"/devices/{DEV}/catalog").json
    assert (running["status"], running["total"], running["received"], running["parts"]) == ("running", 2, 1, 1)
    assert env.client("GET", f"/devices/{DEV}").json["catalog"]["status"] == "running"

    env.clock.advance(1.5)
    device.send(manscdp.encode_catalog_response(query.sn, DEV, 2, items[1:]))
    done = env.client("GET", f"/devices/{DEV}/catalog").json
    assert (done["status"], done["total"], done["received"], done["parts"]) == ("done", 2, 2, 2)
    assert done["finished_at"] == done["synced_at"] == "2023-11-14T22:13:21.500Z"
    assert done["error"] is None
    page = env.client("GET", f"/devices/{DEV}/channels").json
    assert [(c["channel_id"], c["name"]) for c in page["items"]] == [(CAM1, "Cam 1"), (CAM2, "Cam 2")]
    dev = env.client("GET", f"/devices/{DEV}").json
    assert dev["channel_count"] == 2
    assert dev["catalog"] == {"status": "done", "total": 2, "received": 2, "synced_at": "2023-11-14T22:13:21.500Z",
                              "error": None}


def test_catalog_sync_needs_a_registered_device(env: Env) -> None:
    assert_error(env.client("POST", f"/devices/{DEV}/catalog/sync"), 404, "not_found")
    add_device(env)
    assert_error(env.client("POST", f"/devices/{DEV}/catalog/sync"), 409, "device_offline")
    assert env.platform.endpoint.take_output() == []


def test_catalog_progress_from_the_registry_without_a_session(env: Env) -> None:
    assert_error(env.client("GET", f"/devices/{DEV}/catalog"), 404, "not_found")
    add_device(env)
    call(env.platform, q.set_catalog_progress_txn, DEV, "partial", 140, 10,
         dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC))
    progress = env.client("GET", f"/devices/{DEV}/catalog").json
    assert progress == {
        "device_id": DEV, "status": "partial", "sn": None, "total": 140, "received": 10, "parts": None,
        "duplicates": None, "started_at": None, "finished_at": None, "error": None,
        "synced_at": "2024-02-03T04:05:06.000Z",
    }


def test_catalog_sync_that_times_out(env: Env) -> None:
    add_device(env)
    device = FakeDevice(env.platform, env.clock)
    device.register()
    env.client("POST", f"/devices/{DEV}/catalog/sync")
    device.answer()
    env.clock.advance(env.platform.config.sip.catalog_timeout)
    progress = env.client("GET", f"/devices/{DEV}/catalog").json
    assert progress["status"] == "timeout" and progress["synced_at"] is None


# --- live queries ---------------------------------------------------------------


def test_device_info_queries_the_device_and_stores_the_answer(env: Env) -> None:
    add_device(env)
    device = FakeDevice(env.platform, env.clock)
    device.register()
    pending = env.client.start("GET", f"/devices/{DEV}/info")
    query = device.answer()
    assert (query.kind, query.cmd_type, query.device_id) == ("Query", "DeviceInfo", DEV)
    device.send(manscdp.encode_device_info_response(
        query.sn, DEV, device_name="IPC", manufacturer="Hikvision", model="DS-2CD", firmware="V5.5", channel=1,
    ))
    reply = env.client.finish(pending)
    assert reply.code == 200
    info = reply.json
    assert (info["device_id"], info["manufacturer"], info["model"], info["firmware"], info["channel"]) == (
        DEV, "Hikvision", "DS-2CD", "V5.5", 1)
    assert info["result"] == "OK" and info["fields"]["Manufacturer"] == "Hikvision"
    stored = env.client("GET", f"/devices/{DEV}").json
    assert (stored["name"], stored["manufacturer"], stored["firmware"]) == ("IPC", "Hikvision", "V5.5")


def test_device_status_queries_the_device(env: Env) -> None:
    add_device(env)
    device = FakeDevice(env.platform, env.clock)
    device.register()
    pending = env.client.start("GET", f"/devices/{DEV}/status")
    query = device.answer()
    assert query.cmd_type == "DeviceStatus"
    device.send(manscdp.encode_device_status_response(
        query.sn, DEV, online="ONLINE", status="OK", encode="ON", record="OFF",
        device_time="2024-05-01T08:00:00", alarm_status=[manscdp.AlarmStatus(device_id=CAM1, duty_status="OFFDUTY")],
    ))
    status = env.client.finish(pending).json
    assert (status["online"], status["status"], status["encode"], status["record"]) == ("ONLINE", "OK", "ON", "OFF")
    assert status["device_time"].startswith("2024-05-01T08:00:00")
    assert status["alarm_status"] == [{"device_id": CAM1, "duty_status": "OFFDUTY"}]


@pytest.mark.parametrize("what", ["info", "status"])
def test_live_query_timeout_is_504(env: Env, what: str) -> None:
    add_device(env)
    device = FakeDevice(env.platform, env.clock)
    device.register()
    pending = env.client.start("GET", f"/devices/{DEV}/{what}")
    device.answer(200)  # accepted, but the Response never comes
    env.client.stub.flush()
    assert not fired(pending)
    env.clock.advance(env.platform.config.sip.query_timeout)
    error = assert_error(env.client.finish(pending), 504, "device_timeout")
    assert DEV in error["message"]


def test_live_query_refused_by_the_device_is_502(env: Env) -> None:
    add_device(env)
    device = FakeDevice(env.platform, env.clock)
    device.register()
    pending = env.client.start("GET", f"/devices/{DEV}/info")
    device.answer(403)
    assert_error(env.client.finish(pending), 502, "device_rejected")


@pytest.mark.parametrize("what", ["info", "status"])
def test_live_query_of_an_offline_or_unknown_device(env: Env, what: str) -> None:
    assert_error(env.client("GET", f"/devices/{DEV}/{what}"), 404, "not_found")
    add_device(env)
    assert_error(env.client("GET", f"/devices/{DEV}/{what}"), 409, "device_offline")
    live = FakeDevice(env.platform, env.clock).register()
    live.online = False
    assert_error(env.client("GET", f"/devices/{DEV}/{what}"), 409, "device_offline")
    assert env.platform.endpoint.take_output() == []


# --- trace ----------------------------------------------------------------------


def register_bytes(device_id: str, n: int) -> bytes:
    return (
        f"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{n}\r\n"
        f"From: <sip:{device_id}@3402000000>;tag={n}\r\nTo: <sip:{device_id}@3402000000>\r\n"
        f"Call-ID: c{n}\r\nCSeq: {n} REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_trace_of_a_device_that_never_registered(env: Env) -> None:
    trace = env.platform.trace
    for n in range(1, 4):
        trace.record("recv", register_bytes(OTHER, n), DEVICE_ADDR, env.clock.time() + n)
    reply = env.client("GET", f"/devices/{OTHER}/trace")
    assert reply.code == 200
    body = reply.json
    assert body["device_id"] == OTHER
    assert [i["at"] for i in body["items"]] == [
        "2023-11-14T22:13:21.000Z", "2023-11-14T22:13:22.000Z", "2023-11-14T22:13:23.000Z"]
    first = body["items"][0]
    assert first["direction"] == "recv" and first["transport"] == "UDP" and first["peer"] == "192.0.2.10:5062"
    assert first["summary"] == "REGISTER sip:34020000002000000001@3402000000 SIP/2.0"
    assert "Call-ID: c1" in first["message"]
    newest = env.client("GET", f"/devices/{OTHER}/trace?limit=1").json["items"]
    assert len(newest) == 1 and "Call-ID: c3" in newest[0]["message"]
    assert env.client("GET", f"/devices/{DEV}/trace").json == {"device_id": DEV, "items": []}
    assert_error(env.client("GET", f"/devices/{OTHER}/trace?limit=0"), 400, "invalid", "limit")
    assert_error(env.client("GET", f"/devices/{OTHER}/trace?limit=1001"), 400, "invalid", "limit")


# --- live video ---------------------------------------------------------------------

KEY_AU = (b"\x00\x00\x00\x01\x67\x42\xc0\x28\xda" + b"\x00\x00\x00\x01\x68\xce\x3c\x80"
          + b"\x00\x00\x00\x01\x65\x88\x84\x00\x21")
INTER_AU = b"\x00\x00\x00\x01\x41\x9a\x02\x03"


def h264(n: int, *, key: bool) -> Frame:
    return Frame(Codec.H264, KEY_AU if key else INTER_AU, pts=n * 3600, dts=n * 3600, keyframe=key, stream_id=0xE0)


@dataclass
class FakeStream:
    device_id: str
    channel_id: str
    state: str = "playing"
    dispatcher: FrameDispatcher = field(default_factory=FrameDispatcher)
    on_closed: list[Any] = field(default_factory=list)

    @property
    def viewers(self) -> int:
        return len(self.dispatcher.sinks)

    def tracks_known(self) -> bool:
        return self.dispatcher.tracks.ready

    def info(self, clock: Any) -> dict[str, Any]:
        return {"device_id": self.device_id, "channel_id": self.channel_id, "state": self.state,
                "viewers": self.viewers}


class FakeLive:
    """``LiveStreams`` as the API sees it, with a real ``FrameDispatcher`` per stream."""

    def __init__(self) -> None:
        self.streams: dict[str, FakeStream] = {}
        self.plays: list[tuple[str, str]] = []
        self.fail: Exception | None = None
        self.pending: Deferred[FakeStream] | None = None

    def get(self, channel_id: str) -> FakeStream | None:
        return self.streams.get(channel_id)

    async def play(self, device_id: str, channel_id: str) -> FakeStream:
        self.plays.append((device_id, channel_id))
        if self.fail is not None:
            raise self.fail
        if self.pending is not None:
            return await self.pending
        stream = self.streams.setdefault(channel_id, FakeStream(device_id, channel_id))
        return stream

    def stop(self, channel_id: str, reason: str = "stopped") -> bool:
        stream = self.streams.pop(channel_id, None)
        if stream is None:
            return False
        stream.state = "closed"
        for callback in stream.on_closed:
            callback(stream)
        return True

    def attach(self, stream: FakeStream, sink: Any) -> None:
        stream.dispatcher.add_sink(sink)

    def detach(self, stream: FakeStream, sink: Any) -> None:
        stream.dispatcher.remove_sink(sink)

    def viewer_started(self, stream: FakeStream, output: str, peer: str) -> Any:
        return lambda: None


@pytest.fixture
def live(env: Env) -> FakeLive:
    fake = FakeLive()
    env.platform.live = cast(Any, fake)
    call(env.platform, q.create_device_txn, DEV, at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    call(env.platform, q.replace_channels_txn, DEV, [q.ChannelData(channel_id=CAM1, name="C")], complete=True)
    return fake


def test_play_starts_the_channels_stream(env: Env, live: FakeLive) -> None:
    reply = env.client("POST", f"/channels/{CAM1}/play")
    assert reply.code == 200
    assert live.plays == [(DEV, CAM1)]
    # Issue 8 item 4: URLs that play as given, with a playback token (tests/unit/test_play_urls.py).
    q = "?token=" + env.platform.play_tokens.issue("live", CAM1)
    assert reply.json == {
        "stream": {"device_id": DEV, "channel_id": CAM1, "state": "playing", "viewers": 0},
        "urls": {"http_flv": f"http://gbp.test/live/{CAM1}.flv{q}", "rtsp": f"rtsp://gbp.test:8554/live/{CAM1}{q}",
                 "hls": f"http://gbp.test/live/{CAM1}/index.m3u8{q}",
                 "snapshot": f"http://gbp.test/api/v1/channels/{CAM1}/snapshot{q}"},
        "expires_at": "2023-11-15T02:13:20.000Z",
    }
    # A running stream is shared: no second lookup, no second play.
    assert env.client("POST", f"/channels/{CAM1}/play").code == 200
    assert live.plays == [(DEV, CAM1)]


def test_play_unknown_channel_and_auth(env: Env, live: FakeLive) -> None:
    reply = env.client("POST", f"/channels/{CAM2}/play")
    assert (reply.code, reply.json["error"]["code"]) == (404, "not_found")
    assert env.client("POST", f"/channels/{CAM1}/play", token=None).code == 401
    assert env.client("POST", f"/channels/{CAM1}/stop", token="wrong").code == 401
    assert env.client("GET", "/streams", token=None).code == 401
    assert live.plays == []


@pytest.mark.parametrize(("error", "status", "code"), [
    (DeviceOffline("device is not registered"), 409, "device_offline"),
    (DeviceTimeout("no answer"), 504, "device_timeout"),
    (DeviceRejected("486 Busy Here"), 502, "device_rejected"),
    (NoPorts("no RTP ports left"), 503, "no_media_ports"),
])
def test_play_maps_domain_errors(env: Env, live: FakeLive, error: Exception, status: int, code: str) -> None:
    live.fail = error
    reply = env.client("POST", f"/channels/{CAM1}/play")
    assert (reply.code, reply.json["error"]["code"]) == (status, code)
    assert reply.json["error"]["message"] == str(error)


def test_stop_and_list_streams(env: Env, live: FakeLive) -> None:
    assert env.client("GET", "/streams").json == {"items": []}
    env.client("POST", f"/channels/{CAM1}/play")
    live.streams[CAM1].dispatcher.add_sink(cast(Any, FlvSink(lambda data: None)))
    assert env.client("GET", "/streams").json == {
        "items": [{"device_id": DEV, "channel_id": CAM1, "state": "playing", "viewers": 1}]}
    reply = env.client("POST", f"/channels/{CAM1}/stop")
    assert (reply.code, reply.body) == (204, b"")
    assert env.client("GET", "/streams").json == {"items": []}
    reply = env.client("POST", f"/channels/{CAM1}/stop")
    assert (reply.code, reply.json["error"]["code"]) == (404, "not_found")


def test_live_routes_without_a_media_receiver_are_503(env: Env) -> None:
    assert env.platform.live is None
    for method, path in (("POST", f"/channels/{CAM1}/play"), ("POST", f"/channels/{CAM1}/stop"),
                         ("GET", "/streams")):
        reply = env.client(method, path)
        assert (reply.code, reply.json["error"]["code"]) == (503, "media_unavailable"), path


# The FLV route lives outside /api/v1: players open it directly.
FLV_URL = f"{ROOT}/live/{CAM1}.flv"


def test_flv_needs_a_token_in_the_header_or_the_query(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    for url, headers in ((FLV_URL, {}), (FLV_URL + "?token=wrong", {}),
                         (FLV_URL, {"Authorization": "Bearer wrong"})):
        d = stub.get(url, headers=headers)
        stub.flush()
        response = result_of(d)
        assert response.code == 401, url
        assert json.loads(result_of(stub.content(response)))["error"]["code"] == "unauthorized"
    assert live.plays == []


def test_flv_of_an_unknown_channel_is_404(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    d = stub.get(f"http://gbp.test/live/{CAM2}.flv?token={TOKEN}")
    stub.flush()
    assert result_of(d).code == 404


def test_flv_streams_from_the_gop_cache_and_ends_with_the_stream(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    env.client("POST", f"/channels/{CAM1}/play")
    stream = live.streams[CAM1]
    stream.dispatcher.input_frame(h264(0, key=True))
    stream.dispatcher.input_frame(h264(13, key=False))  # 0.52 s on: the tracks are known, video only

    d = stub.get(FLV_URL + f"?token={TOKEN}")
    stub.flush()
    response = result_of(d)
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["video/x-flv"]
    assert response.headers.getRawHeaders("Content-Length") is None
    assert stream.viewers == 1
    chunks: list[bytes] = []
    done = treq.collect(response, chunks.append)
    stub.flush()
    # The GOP cache replayed: FLV header, AVC sequence header, the keyframe and the inter frame.
    data = b"".join(chunks)
    assert data.startswith(b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00")
    assert data[13] == 9 and data[13 + 11:13 + 13] == b"\x17\x00"  # video tag, AVC sequence header

    stream.dispatcher.input_frame(h264(2, key=False))
    stub.flush()
    assert len(b"".join(chunks)) > len(data)
    assert not fired(done)

    live.stop(CAM1)
    stub.flush()
    result_of(done)
    assert stream.viewers == 0 and stream.on_closed == []


def test_flv_starts_the_stream_on_demand_with_a_bearer_header(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    d = stub.get(FLV_URL, headers={"Authorization": f"Bearer {TOKEN}"})
    stub.flush()
    assert result_of(d).code == 200
    assert live.plays == [(DEV, CAM1)] and live.streams[CAM1].viewers == 1
    live.stop(CAM1)
    stub.flush()


def test_flv_viewer_that_disconnects_is_detached(env: Env, live: FakeLive) -> None:
    env.client("POST", f"/channels/{CAM1}/play")
    stream = live.streams[CAM1]
    # A real twisted.web Request on an in-memory channel, so the connection can be lost.
    channel = DummyChannel()
    channel.site = Site(env.api.app.resource())  # type: ignore[no-untyped-call]
    request = WebRequest(channel)
    request.requestHeaders.setRawHeaders(b"host", [b"gbp.test"])
    request.gotLength(0)
    request.requestReceived(b"GET", f"/live/{CAM1}.flv?token={TOKEN}".encode(), b"HTTP/1.1")
    assert stream.viewers == 1
    stream.dispatcher.input_frame(h264(0, key=True))
    stream.dispatcher.input_frame(h264(13, key=False))  # 0.52 s on: video only, the FLV header goes out
    written = channel.transport.written.getvalue()
    assert written.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in written
    assert b"FLV\x01" in written
    # The token stays out of the access log: tests/unit/test_secrets_in_logs.py.
    request.connectionLost(Failure(ConnectionDone()))  # the player went away
    assert stream.viewers == 0 and stream.on_closed == []
    assert live.streams[CAM1] is stream  # the stream itself lives on until it is idle
    stream.dispatcher.input_frame(h264(1, key=False))
    assert channel.transport.written.getvalue() == written  # nothing more for a gone viewer


# --- snapshots ------------------------------------------------------------------------

SNAPSHOT = f"/channels/{CAM1}/snapshot"


@pytest.fixture(scope="module")
def real_keyframe(shared_dir: Path) -> Frame:
    """The first keyframe of the 1080p capture, SPS/PPS in the access unit."""
    return next(f for f in capture_frames(shared_dir) if f.keyframe)


@pytest.fixture
def snapper(env: Env, live: FakeLive) -> Env:
    # The JPEG work runs inline: no threads in unit tests.
    env.api.run_in_thread = maybeDeferred
    return env


def image(d: Deferred[Any], env: Env) -> tuple[int, Any, bytes]:
    env.client.stub.flush()
    response = result_of(d)
    body = result_of(env.client.stub.content(response))
    return response.code, response.headers, body


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(jpeg), mode="r") as container:
        picture = next(container.decode(video=0))
        return picture.width, picture.height


def test_snapshot_is_the_jpeg_of_the_cached_keyframe(snapper: Env, live: FakeLive, real_keyframe: Frame) -> None:
    env = snapper
    env.client("POST", f"/channels/{CAM1}/play")
    live.streams[CAM1].dispatcher.input_frame(real_keyframe)
    code, headers, body = image(env.client.start("GET", SNAPSHOT), env)
    assert code == 200, body
    assert headers.getRawHeaders("Content-Type") == ["image/jpeg"]
    assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
    assert jpeg_size(body) == (1920, 1080)
    # The snapshot is no viewer: the stream idles out as before.
    assert live.streams[CAM1].viewers == 0 and live.plays == [(DEV, CAM1)]


def test_snapshot_without_a_gop_cache_is_the_jpeg_of_the_latest_keyframe(snapper: Env, live: FakeLive,
                                                                         real_keyframe: Frame) -> None:
    env = snapper
    env.client("POST", f"/channels/{CAM1}/play")
    dispatcher = live.streams[CAM1].dispatcher
    dispatcher.cache = GopCache(max_bytes=0)  # media.gop_cache_bytes = 0
    dispatcher.input_frame(real_keyframe)
    dispatcher.input_frame(h264(1, key=False))  # the picture after it is no snapshot
    assert dispatcher.cache.frames == []
    code, _, body = image(env.client.start("GET", SNAPSHOT), env)
    assert code == 200, body
    assert jpeg_size(body) == (1920, 1080)


def test_snapshot_starts_the_stream_and_waits_for_a_keyframe(snapper: Env, live: FakeLive,
                                                             real_keyframe: Frame) -> None:
    env = snapper
    d = env.client.stub.get(f"{BASE}{SNAPSHOT}?token={TOKEN}")  # a player-style URL
    env.client.stub.flush()
    assert live.plays == [(DEV, CAM1)] and not fired(d)
    env.clock.advance(1.0)
    assert not fired(d)
    live.streams[CAM1].dispatcher.input_frame(real_keyframe)
    env.clock.advance(0.1)
    code, headers, body = image(d, env)
    assert (code, headers.getRawHeaders("Content-Type")) == (200, ["image/jpeg"])
    assert jpeg_size(body) == (1920, 1080)
    assert env.clock.pending() == 0  # no poll left behind


def test_snapshot_without_a_keyframe_in_time_is_503(snapper: Env, live: FakeLive) -> None:
    env = snapper
    pending = env.client.start("GET", SNAPSHOT)
    env.client.stub.flush()
    env.clock.advance(4.9)
    live.streams[CAM1].dispatcher.input_frame(h264(0, key=False))  # no keyframe: not cached
    assert not fired(pending)
    env.clock.advance(0.2)
    assert_error(env.client.finish(pending), 503, "no_keyframe")
    assert env.clock.pending() == 0


def test_snapshot_of_a_stream_that_ends_while_waiting_is_503(snapper: Env, live: FakeLive) -> None:
    env = snapper
    pending = env.client.start("GET", SNAPSHOT)
    env.client.stub.flush()
    live.stop(CAM1)
    env.clock.advance(0.1)
    assert_error(env.client.finish(pending), 503, "no_keyframe")


def test_snapshot_of_an_undecodable_keyframe_is_502(snapper: Env, live: FakeLive) -> None:
    env = snapper
    env.client("POST", f"/channels/{CAM1}/play")
    live.streams[CAM1].dispatcher.input_frame(h264(0, key=True))  # parameter sets of no real picture
    assert_error(env.client("GET", SNAPSHOT), 502, "bad_picture")


def test_snapshot_auth_and_errors(snapper: Env, live: FakeLive) -> None:
    env = snapper
    assert_error(env.client("GET", SNAPSHOT, token=None), 401, "unauthorized")
    assert_error(env.client("GET", f"{BASE}{SNAPSHOT}?token=wrong", token=None), 401, "unauthorized")
    assert_error(env.client("GET", f"/channels/{CAM2}/snapshot"), 404, "not_found")
    assert live.plays == []
    for error, status, code in ((DeviceOffline("device is not registered"), 409, "device_offline"),
                                (DeviceTimeout("no answer"), 504, "device_timeout"),
                                (DeviceRejected("486 Busy Here"), 502, "device_rejected"),
                                (NoPorts("no RTP ports left"), 503, "no_media_ports")):
        live.fail = error
        assert_error(env.client("GET", SNAPSHOT), status, code)


def test_snapshot_without_a_media_receiver_is_503(env: Env) -> None:
    assert_error(env.client("GET", SNAPSHOT), 503, "media_unavailable")


# --- HLS (RFC 8216) ---------------------------------------------------------------------

HLS_URL = f"{ROOT}/live/{CAM1}/index.m3u8"


def feed_gop(stream: FakeStream, start: int, frames: int = 50) -> None:
    """One 2 s GOP at 25 fps (PTS step 3600), starting at frame ``start``."""
    for n in range(start, start + frames):
        stream.dispatcher.input_frame(h264(n, key=n == start))


def test_hls_playlist_waits_for_a_first_segment_and_lists_it_with_the_token(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    d = stub.get(HLS_URL + f"?token={TOKEN}")
    stub.flush()
    assert live.plays == [(DEV, CAM1)] and not fired(d)
    stream = live.streams[CAM1]
    assert stream.viewers == 1  # the shared segmenter
    feed_gop(stream, 0)
    feed_gop(stream, 50)  # its keyframe cuts segment 0
    env.clock.advance(0.1)
    stub.flush()
    response = result_of(d)
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["application/vnd.apple.mpegurl"]
    body = result_of(stub.content(response)).decode()
    assert body == ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                    f"#EXTINF:2.000,\nseg0.ts?token={TOKEN}\n")

    d = stub.get(f"{ROOT}/live/{CAM1}/seg0.ts?token={TOKEN}")
    stub.flush()
    response = result_of(d)
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["video/mp2t"]
    data = result_of(stub.content(response))
    assert data[0] == 0x47 and len(data) % 188 == 0
    # A second playlist request shares the segmenter.
    d = stub.get(HLS_URL, headers={"Authorization": f"Bearer {TOKEN}"})
    stub.flush()
    assert b"\nseg0.ts\n" in result_of(stub.content(result_of(d)))
    assert stream.viewers == 1 and live.plays == [(DEV, CAM1)]


def test_hls_segment_out_of_the_window_or_without_output_is_404(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    d = stub.get(f"{ROOT}/live/{CAM1}/seg0.ts?token={TOKEN}")
    stub.flush()
    assert result_of(d).code == 404  # no HLS output yet: a segment request starts nothing
    assert live.plays == []
    stub.get(HLS_URL + f"?token={TOKEN}")
    stub.flush()
    feed_gop(live.streams[CAM1], 0)
    feed_gop(live.streams[CAM1], 50)
    d = stub.get(f"{ROOT}/live/{CAM1}/seg1.ts?token={TOKEN}")
    stub.flush()
    response = result_of(d)
    assert response.code == 404
    assert json.loads(result_of(stub.content(response)))["error"]["code"] == "not_found"
    env.clock.advance(0.1)
    stub.flush()


def test_hls_needs_a_token(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    for url in (HLS_URL, HLS_URL + "?token=wrong", f"{ROOT}/live/{CAM1}/seg0.ts"):
        d = stub.get(url)
        stub.flush()
        assert result_of(d).code == 401, url
    assert live.plays == []


def test_hls_without_a_segment_in_time_is_503(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    d = stub.get(HLS_URL + f"?token={TOKEN}")
    stub.flush()
    env.clock.advance(7.9)
    stub.flush()
    assert not fired(d)
    env.clock.advance(0.2)
    stub.flush()
    response = result_of(d)
    assert response.code == 503
    assert json.loads(result_of(stub.content(response)))["error"]["code"] == "no_segment"


def test_hls_output_is_detached_when_unrequested_or_when_the_stream_ends(env: Env, live: FakeLive) -> None:
    stub = env.client.stub
    stub.get(HLS_URL + f"?token={TOKEN}")
    stub.flush()
    stream = live.streams[CAM1]
    feed_gop(stream, 0)
    feed_gop(stream, 50)
    env.clock.advance(0.1)
    stub.flush()
    for _ in range(3):  # segment requests keep it watched
        env.clock.advance(15)
        d = stub.get(f"{ROOT}/live/{CAM1}/seg0.ts?token={TOKEN}")
        stub.flush()
        assert result_of(d).code == 200
    assert stream.viewers == 1
    env.clock.advance(20)  # no request for 20 s: the player has gone
    assert stream.viewers == 0 and stream.on_closed == []
    d = stub.get(f"{ROOT}/live/{CAM1}/seg0.ts?token={TOKEN}")
    stub.flush()
    assert result_of(d).code == 404

    # A new playlist request attaches a new segmenter; the stream ending removes it.
    stub.get(HLS_URL + f"?token={TOKEN}")
    stub.flush()
    assert stream.viewers == 1
    live.stop(CAM1)
    stub.flush()
    assert stream.viewers == 0
    env.clock.advance(20)  # its idle timer was cancelled with it
    d = stub.get(f"{ROOT}/live/{CAM1}/seg0.ts?token={TOKEN}")
    stub.flush()
    assert result_of(d).code == 404
