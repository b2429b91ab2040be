"""End to end: hostile HTTP and RTSP requests against ``gbplatform run`` (issue 8 items 5-7).

Raw bytes on real sockets, so nothing between the test and the platform
normalises the request line or the Host header. Every request gets a 4xx
answer (JSON for the API) and the platform logs no traceback.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import TOKEN, PlatformProcess

pytestmark = pytest.mark.integration

CH = "34020000001310000001"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    data: Path = tmp_path_factory.mktemp("hostile") / "data"
    platform = PlatformProcess(data).start()
    yield platform
    platform.stop()


def exchange(port: int, request: bytes) -> bytes:
    """Send one request, read until the server closes (``Connection: close``) or 5 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if request.startswith(b"DESCRIBE") and b"\r\n\r\n" in b"".join(chunks):
                    break  # RTSP keeps the connection open
        except TimeoutError:
            pass
    return b"".join(chunks)


def http(platform: PlatformProcess, method: str, target: bytes, *, host: bytes = b"127.0.0.1",
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    head = [f"{method} ".encode() + target + b" HTTP/1.1", b"Host: " + host,
            f"Authorization: Bearer {TOKEN}".encode(), b"Connection: close"]
    if body is not None:
        head += [b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    raw = exchange(platform.http_port, b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
    status_head, _, payload = raw.partition(b"\r\n\r\n")
    lines = status_head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        payload = dechunk(payload)
    return int(lines[0].split()[1]), headers, payload


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2:]
    return out


def assert_json_400(status: int, headers: dict[str, str], payload: bytes, field: str) -> None:
    assert status == 400, payload
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(payload)["error"]["field"] == field


def test_a_slash_redirect_never_points_at_the_host_header(platform: PlatformProcess) -> None:
    status, headers, payload = http(platform, "GET", b"/api/v1//devices?limit=5", host=b"evil.example")
    assert status == 308
    assert headers["location"] == "/api/v1/devices?limit=5"
    assert b"evil" not in payload


@pytest.mark.parametrize(("method", "target", "body", "field"), [
    ("GET", b"/api/v1/devices/%ff%fe", None, "path"),
    ("POST", b"/api/v1/devices", b'{"device_id": "34020000001320000009", "name": ' + b"9" * 5000 + b"}", "name"),
    ("POST", b"/api/v1/devices", b'{"device_id": "34020000001320000009", "name": "\\ud800"}', "name"),
    ("GET", b"/api/v1/record/plans/" + b"9" * 30, None, "plan_id"),
    ("GET", f"/vod/{CH}/seg/".encode() + b"9" * 5000 + b".ts", None, "segment_id"),
    ("GET", f"/vod/{CH}.mp4?start=nan&end=1700000000".encode(), None, "start"),
    ("GET", f"/vod/{CH}/index.m3u8?start=253402300799&end=253402300859".encode(), None, "start"),
    ("GET", f"/api/v1/channels/{CH}/recordings?date=9999-12-31".encode(), None, "date"),
])
def test_hostile_requests_are_json_400s_without_a_traceback(platform: PlatformProcess, method: str, target: bytes,
                                                            body: bytes | None, field: str) -> None:
    assert_json_400(*http(platform, method, target, body=body), field)
    assert "Traceback" not in platform.log() and "internal error" not in platform.log()


def test_rtsp_url_with_an_unbalanced_bracket_is_400(platform: PlatformProcess) -> None:
    answer = exchange(platform.rtsp_port, b"DESCRIBE rtsp://[::1/vod/x RTSP/1.0\r\nCSeq: 3\r\n\r\n")
    assert answer.startswith(b"RTSP/1.0 400 ") and b"CSeq: 3\r\n" in answer
    assert "Traceback" not in platform.log()
