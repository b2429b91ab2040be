"""No credential reaches the log (issue 8 item 3): the access log of every route, the start-up
lines, RTSP error lines."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.web.server import Request as WebRequest
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import provider

from gbplatform.app.config import Config
from gbplatform.app.service import HttpService, make_service
from media.rtsp import RtspServerConnection
from tests.unit.test_api import CAM1, TOKEN, make_platform
from tests.unit.test_devices import _Reactor

SECRET = "leaked-if-you-see-this"


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def access_log(method: bytes, uri: bytes, headers: dict[bytes, bytes] | None = None) -> list[str]:
    """The access-log lines of one request through the Site that ``gbplatform run`` serves."""
    platform, _ = make_platform()
    reactor = _Reactor()
    HttpService(platform, reactor).startService()
    [(_port, site, _backlog, _host)] = reactor.tcpServers
    site.startFactory()
    lines: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        channel = DummyChannel()
        channel.site = site
        channel.factory = site  # type: ignore[attr-defined]
        request = WebRequest(channel)
        request.requestHeaders.setRawHeaders(b"host", [b"gbp.test"])
        for name, value in (headers or {}).items():
            request.requestHeaders.setRawHeaders(name, [value])
        request.gotLength(0)
        request.requestReceived(method, uri, b"HTTP/1.1")
    finally:
        globalLogPublisher.removeObserver(observe)
        site.stopFactory()
        platform.db.engine.dispose()
    return [line for line in lines if " HTTP/1.1\" " in line]


@pytest.mark.parametrize(("method", "uri"), [
    (b"GET", f"/api/v1/devices?token={SECRET}".encode()),  # 401: a token in the query does not count here
    (b"GET", f"/api/v1/devices?limit=5&token={SECRET}&offset=0".encode()),
    (b"GET", f"/no/such/route?token={SECRET}".encode()),  # 404
    (b"OPTIONS", f"/api/v1/devices?token={SECRET}".encode()),
    (b"GET", f"/api/v1/health?token={SECRET}".encode()),
    (b"GET", f"/live/{CAM1}.flv?token={SECRET}".encode()),  # 401 on a media route
    (b"GET", f"/api/v1/devices?%74oken={SECRET}".encode()),  # percent-encoded name: still a token
])
def test_the_access_log_keeps_no_token_on_any_route(method: bytes, uri: bytes) -> None:
    [line] = access_log(method, uri)
    assert SECRET not in line
    assert uri.split(b"?")[0].decode() in line  # the path itself is still logged


def test_the_access_log_keeps_no_token_from_the_referer() -> None:
    [line] = access_log(b"GET", b"/api/v1/health", {b"referer": f"http://console/p?token={SECRET}".encode()})
    assert SECRET not in line and "http://console/p" in line


def test_start_up_logs_where_the_api_token_is_kept_not_the_token(tmp_path: Path, logged: list[str]) -> None:
    config = Config()
    config = replace(config, storage=replace(config.storage, data_dir=str(tmp_path)))
    top = make_service(config, _Reactor())
    token = (tmp_path / "api_token").read_text().strip()
    assert token and not any(token in line for line in logged)
    assert any(str(tmp_path / "api_token") in line for line in logged)
    top.platform.db.dispose()  # type: ignore[attr-defined]


def test_rtsp_error_lines_keep_no_token(caplog: pytest.LogCaptureFixture) -> None:
    c = RtspServerConnection(token=TOKEN, rng=random.Random(1))
    caplog.set_level("INFO", logger="media.rtsp")
    for uri in (f"rtsp://h/live/{CAM1}?token={SECRET}", f"rtsp://h/live/{CAM1}?token={SECRET}/trackID=0",
                f"rtsp://h/nowhere/x?a=1&token={SECRET}"):
        c.receive_data(f"DESCRIBE {uri} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(), 0.0)
    c.data_to_send()
    text = caplog.text
    assert "401" in text and "404" in text
    assert SECRET not in text
