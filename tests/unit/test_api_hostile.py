"""Hostile HTTP input (issue 8 items 5 and 6): every request below is
answered with a 4xx JSON error naming the field, and none of them is logged
as an internal error. Redirects never echo the client's ``Host`` header.

Over ``StubTreq`` with the recording fixture of ``test_recording`` (so the
VOD, MP4 and timeline routes are live).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.web.server import Request as WebRequest
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyChannel

from gbplatform.api import schemas
from gbplatform.api.app import Api
from tests.unit import test_recording
from tests.unit.test_api import CAM1, DEV, OTHER, ROOT, TOKEN, assert_error
from tests.unit.test_recording import Rec

rec = test_recording.rec  # the fixture, reused under its name

HUGE = "9" * 5000  # past int()'s 4,300-digit limit
PAST_64 = "9" * 25  # an int in Python, an OverflowError in SQLite
END = "1700000060"


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def _failures(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "log_failure" in e or e.get("isError")]


# (method, path, JSON text of the body or None, status, field)
CASES: list[tuple[str, str, str | None, int, str]] = [
    ("POST", "/devices", f'{{"device_id": "{OTHER}", "name": {HUGE}}}', 400, "name"),
    ("POST", "/devices", f'{{"device_id": "{OTHER}", "name": "\\ud800"}}', 400, "name"),
    ("PATCH", f"/devices/{DEV}", '{"name": "a\\udfffb"}', 400, "name"),
    ("PATCH", f"/devices/{DEV}", '{"\\ud800": 1}', 400, "\\ud800"),  # the field, escaped
    ("POST", "/devices", f'{{"device_id": "{OTHER}", "enabled": NaN}}', 400, "enabled"),
    ("POST", "/record/plans", f'{{"name": "n", "schedule": [{{"weekday": {HUGE}}}]}}', 400, "weekday"),
    ("PUT", f"/channels/{CAM1}/record", f'{{"mode": "plan", "plan_id": {PAST_64}}}', 400, "plan_id"),
    ("PUT", f"/channels/{CAM1}/record", f'{{"mode": "plan", "plan_id": {HUGE}}}', 400, "plan_id"),
    ("PUT", f"/channels/{CAM1}/record", '{"mode": "off", "retention_days": 1e999}', 400, "retention_days"),
    ("GET", f"/record/plans/{PAST_64}", None, 400, "plan_id"),
    ("GET", f"/record/plans/{HUGE}", None, 400, "plan_id"),
    ("PUT", f"/record/plans/{PAST_64}", '{"name": "x"}', 400, "plan_id"),
    ("DELETE", f"/record/plans/{PAST_64}", None, 400, "plan_id"),
    ("GET", f"{ROOT}/vod/{CAM1}/seg/{PAST_64}.ts", None, 400, "segment_id"),
    ("GET", f"{ROOT}/vod/{CAM1}/seg/{HUGE}.ts", None, 400, "segment_id"),
    ("GET", f"{ROOT}/vod/{CAM1}/index.m3u8?start=nan&end={END}", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}/index.m3u8?start=-1e18&end={END}", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}/index.m3u8?start=253402300799&end=253402300859", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}/index.m3u8?start=1700000000&end=inf", None, 400, "end"),
    ("GET", f"{ROOT}/vod/{CAM1}/index.m3u8?start=9999-12-31T23:59:00Z&end=1700000000", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}.mp4?start=nan&end={END}", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}.mp4?start=-1e18&end={END}", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}.mp4?start=253402300799&end=253402300859", None, 400, "start"),
    ("GET", f"{ROOT}/vod/{CAM1}.mp4?start={HUGE}&end={END}", None, 400, "start"),
    ("GET", f"/channels/{CAM1}/recordings?date=9999-12-31", None, 400, "date"),
    ("GET", f"/channels/{CAM1}/recordings?date=0001-01-01", None, 400, "date"),
    ("GET", "/devices/%ff%fe", None, 400, "path"),
    ("GET", f"{ROOT}/vod/%ff%fe.mp4?start=1700000000&end={END}", None, 400, "path"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), CASES,
                         ids=[f"{m} {p[:60]} {(b or '')[:40]}" for m, p, b, _, _ in CASES])
def test_hostile_input_is_a_json_4xx_naming_the_field(rec: Rec, logged: list[LogEvent], method: str, path: str,
                                                       body: str | None, status: int, field: str) -> None:
    raw = body.encode() if body is not None else None
    reply = rec.client(method, path, raw=raw)  # the client asserts a JSON Content-Type
    error = assert_error(reply, status, "invalid", field)
    assert error["message"].startswith(f"{field}: ")
    assert b"Traceback" not in reply.body
    assert not _failures(logged), [e.get("log_format") for e in _failures(logged)]


def test_the_parser_keeps_ordinary_numbers(rec: Rec) -> None:
    assert schemas.parse_json_body(b'{"a": -9223372036854775808, "b": 9223372036854775807, "c": 1.5e3}') == {
        "a": -(2**63), "b": 2**63 - 1, "c": 1500.0}


def raw_get(rec: Rec, target: bytes, host: bytes) -> tuple[WebRequest, bytes]:
    """A GET with this exact request target and Host header, on an in-memory channel."""
    channel = DummyChannel()
    channel.site = Site(Api(rec.platform).app.resource())  # type: ignore[no-untyped-call]
    request = WebRequest(channel)
    request.requestHeaders.setRawHeaders(b"host", [host])
    request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {TOKEN}".encode()])
    request.gotLength(0)
    request.requestReceived(b"GET", target, b"HTTP/1.1")
    assert request.finished
    return request, channel.transport.written.getvalue()


@pytest.mark.parametrize(("target", "host", "location"), [
    (b"/api/v1//devices", b"evil.example", b"/api/v1/devices"),  # issue 8 item 5
    (b"/api/v1//devices?online=true&limit=5", b"evil.example:8080", b"/api/v1/devices?online=true&limit=5"),
    (b"//api/v1//devices", b"evil.example/x?y#z", b"/api/v1/devices"),
    (b"/api/v1//devices", b"[::1", b"/api/v1/devices"),
    (b"/api/v1//devices", b"evil.example:99999", b"/api/v1/devices"),
    (b"///api/v1//devices", b"gbp.test", b"/api/v1/devices"),
])
def test_a_slash_redirect_is_relative_whatever_the_host_header(rec: Rec, logged: list[LogEvent], target: bytes,
                                                                host: bytes, location: bytes) -> None:
    request, written = raw_get(rec, target, host)
    assert request.code == 308
    assert request.responseHeaders.getRawHeaders(b"location") == [location]
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]
    assert b"evil" not in written.partition(b"\r\n\r\n")[2]
    assert not _failures(logged)


def test_a_deeply_nested_body_is_bad_json(rec: Rec, logged: list[LogEvent]) -> None:
    depth = 20_000  # 40 kB, under MAX_BODY; the C scanner recurses once per level
    raw = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
    assert_error(rec.client("POST", "/devices", raw=raw), 400, "bad_json")
    assert not _failures(logged)
