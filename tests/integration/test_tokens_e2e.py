"""End to end (issue 8 items 3 and 4), against ``gbplatform run`` with a generated API token:

* the URLs ``POST /api/v1/channels/{id}/play`` returns play AS GIVEN in ffprobe (RTSP, HTTP-FLV),
  carry a playback token and never the API token; that token opens no other channel, over
  HTTP or RTSP, and RTSP checks it on every request of a connection;
* the platform's log (access log, RTSP error lines, start-up lines) holds no token value and
  not the API token, which it only says where it is kept.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000041"
SECRET_PROBE = "not-a-real-token-1234"  # sent on routes that refuse it: must not be logged either


class Platform:
    """The platform process and the API token it generated at first start."""

    def __init__(self, proc: PlatformProcess) -> None:
        self.proc = proc
        self.token = (proc.data_dir / "api_token").read_text().strip()

    def http(self, method: str, url: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        if url.startswith("/"):
            url = f"http://127.0.0.1:{self.proc.http_port}{url}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read(4096) if resp.headers.get("Content-Type", "").startswith("video/") else resp.read()
                return resp.status, json.loads(raw) if raw and "json" in resp.headers["Content-Type"] else raw
        except urllib.error.HTTPError as e:
            return e.code, e.read()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("ffprobe") is None:
        pytest.fail("ffprobe is missing: scripts/test.sh installs Debian's ffmpeg")
    tmp = tmp_path_factory.mktemp("tokens")
    proc = PlatformProcess(tmp / "data", env={"GBP_API_TOKEN": ""}).start()  # generated at first start
    sim = SimulatorProcess(proc, tmp / "sim.log", "--devices", "1", "--channels", "2", "--first-id", DEVICE)
    try:
        platform = Platform(proc)

        def channels() -> list[str] | None:
            status, body = platform.http("GET", f"/api/v1/devices/{DEVICE}/channels")
            items = sorted(i["channel_id"] for i in body["items"]) if status == 200 else []
            return items if len(items) == 2 else None

        yield {"platform": platform, "proc": proc, "sim": sim,
               "channels": wait_for(channels, 60, "the simulated device's two channels")}
    finally:
        sim.kill()
        proc.stop()


def _ffprobe(url: str, *options: str) -> dict[str, Any]:
    cmd = ["ffprobe", "-v", "error", *options, "-read_intervals", "%+2", "-select_streams", "v:0",
           "-show_entries", "stream=codec_name,width,height", "-of", "json", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"ffprobe {url}: {out.stderr}"
    return dict(json.loads(out.stdout))


def _rtsp(port: int, requests: list[str]) -> list[int]:
    """Send RTSP requests on ONE connection, one at a time; the status of each answer."""
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rb")
        for n, line in enumerate(requests, 1):
            s.sendall(f"{line} RTSP/1.0\r\nCSeq: {n}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
                      .encode())
            status = int(f.readline().split()[1])
            length = 0
            while (header := f.readline()) not in (b"\r\n", b""):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            f.read(length)
            statuses.append(status)
    return statuses


def test_play_urls_work_as_given_with_a_playback_token(env: dict[str, Any]) -> None:
    platform: Platform = env["platform"]
    first, second = env["channels"]
    status, body = platform.http("POST", f"/api/v1/channels/{first}/play")
    assert status == 200, body
    urls = body["urls"]
    assert set(urls) == {"http_flv", "hls", "snapshot", "rtsp"}
    assert not any(platform.token in u for u in urls.values())
    [token] = {urllib.parse.parse_qs(urllib.parse.urlsplit(u).query)["token"][0] for u in urls.values()}

    # As given: no header, no token appended by us.
    for url, options in ((urls["rtsp"], ("-rtsp_transport", "tcp")), (urls["rtsp"], ("-rtsp_transport", "udp")),
                         (urls["http_flv"], ())):
        [video] = _ffprobe(url, *options)["streams"]
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1920, 1080), url
    status, jpeg = platform.http("GET", urls["snapshot"], auth=False)
    assert status == 200 and jpeg[:2] == b"\xff\xd8"

    # Channel A's token opens nothing of channel B, over HTTP or RTSP.
    http = f"http://127.0.0.1:{platform.proc.http_port}"
    assert platform.http("GET", f"{http}/live/{second}.flv?token={token}", auth=False)[0] == 401
    assert platform.http("GET", f"{http}/live/{second}/index.m3u8?token={token}", auth=False)[0] == 401
    rtsp = f"rtsp://127.0.0.1:{platform.proc.rtsp_port}/live"
    assert _rtsp(platform.proc.rtsp_port, [f"DESCRIBE {rtsp}/{second}?token={token}"]) == [401]
    # Every request is checked: a good DESCRIBE of A does not open B on the same connection.
    assert _rtsp(platform.proc.rtsp_port, [f"DESCRIBE {rtsp}/{first}?token={token}",
                                           f"DESCRIBE {rtsp}/{second}",
                                           f"SETUP {rtsp}/{second}/trackID=0"]) == [200, 401, 401]
    # The API token still works on media routes, for API clients.
    assert platform.http("GET", f"{http}/live/{second}/index.m3u8?token={platform.token}", auth=False)[0] == 200


def test_the_log_holds_no_token(env: dict[str, Any]) -> None:
    platform: Platform = env["platform"]
    first, _ = env["channels"]
    http = f"http://127.0.0.1:{platform.proc.http_port}"
    # Tokens in the query of routes that refuse them or do not exist, of OPTIONS, and on RTSP errors.
    assert platform.http("GET", f"{http}/api/v1/devices?token={SECRET_PROBE}", auth=False)[0] == 401
    assert platform.http("GET", f"{http}/no/such/route?token={SECRET_PROBE}", auth=False)[0] == 404
    platform.http("OPTIONS", f"{http}/api/v1/devices?token={SECRET_PROBE}", auth=False)
    assert platform.http("GET", f"{http}/live/{first}.flv?token={SECRET_PROBE}", auth=False)[0] == 401
    rtsp = f"rtsp://127.0.0.1:{platform.proc.rtsp_port}"
    assert _rtsp(platform.proc.rtsp_port, [f"DESCRIBE {rtsp}/live/{first}?token={SECRET_PROBE}",
                                           f"DESCRIBE {rtsp}/nowhere/x?token={SECRET_PROBE}"]) == [401, 404]
    proc: PlatformProcess = env["proc"]

    def logged() -> str | None:
        text = Path(proc.log_path).read_text(errors="replace")
        return text if "/no/such/route" in text and "nowhere" in text else None

    text = wait_for(logged, 15, "the access and RTSP error lines in the platform log")
    assert platform.token not in text
    assert SECRET_PROBE not in text
    # No token= with a value, except the *** the log puts in its place.
    leaks = re.findall(r"token=(?!\*\*\*)[^\s&\"]+", text)
    assert leaks == [], leaks
    assert str(proc.data_dir / "api_token") in text  # where the API token is kept, not what it is
