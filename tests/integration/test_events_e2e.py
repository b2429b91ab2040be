"""End to end: the live event stream and webhooks against ``gbplatform run`` and the simulator.

An SSE client (``http.client`` on a real socket, read in a thread) opens
``GET /api/v1/events`` before the simulated device starts: it sees the
device registered and its catalog synced, then a live stream started when a
channel is played through the API. It disconnects; the stream is stopped
meanwhile; a new connection with ``Last-Event-ID`` gets what it missed
(``stream`` ended) and then keepalive comments. A webhook receiver (an HTTP
server in the test) gets the same events, in order, each signed with the
HMAC of its body. The access log shows the ``?token=`` of the stream as
``***``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import socket
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, free_port, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
SECRET = "hook-secret"


class SseClient:
    """``GET /api/v1/events`` read line by line in a thread; events and comments kept in order."""

    def __init__(self, port: int, query: str = "", headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", f"/api/v1/events{query}", headers=headers or {})
        self.response = self.conn.getresponse()
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.frames: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    with self.lock:
                        self.comments.append(line)
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                else:
                    with self.lock:
                        self.frames.append(fields)
                        if "data" in fields:
                            self.events.append({"sse_id": fields.get("id"), "sse_event": fields.get("event"),
                                                **json.loads(fields["data"])})
                    fields = {}
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed by close() (http.client raises any of these when its socket goes mid-read)

    def find(self, **match: Any) -> dict[str, Any] | None:
        with self.lock:
            for event in self.events:
                if all(event.get(k) == v for k, v in match.items()):
                    return event
        return None

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conn.close()
        self.thread.join(10)


class Hooks:
    """A webhook receiver: answers 204 and keeps each POST's headers and body."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[Message, bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers, body))  # names compared without case (RFC 9110 §5.1)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in list(self.received)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_event_stream_resumes_with_last_event_id_and_webhooks_get_the_same_events(tmp_path: Path) -> None:
    hooks = Hooks()
    platform = PlatformProcess(tmp_path / "data", env={
        "GBP_WEBHOOKS_URLS": f"http://127.0.0.1:{hooks.port}/hook",
        "GBP_WEBHOOKS_SECRET": SECRET,
        "GBP_API_EVENT_KEEPALIVE": "1",
    }).start()
    sim = None
    first = second = None
    try:
        first = SseClient(platform.http_port, f"?types=device,stream,channel&token={TOKEN}")
        assert first.response.status == 200
        assert first.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                               "--first-id", DEVICE)
        registered = wait_for(lambda: first.find(type="device", event="registered"), 30,
                              f"the device registered event\n{platform.log()}")
        assert registered["device_id"] == DEVICE and registered["online"] is True
        assert registered["sse_event"] == "device" and registered["sse_id"] == str(registered["id"])
        synced = wait_for(lambda: first.find(type="channel", event="synced"), 60, "the catalog synced event")
        assert synced["status"] == "done" and len(synced["added"]) == 1
        channel_id = synced["added"][0]
        assert first.frames[0].get("retry") == "3000"

        status, body = platform.api("POST", f"/channels/{channel_id}/play")
        assert status == 200, body
        started = wait_for(lambda: first.find(type="stream", event="started"), 30, "the stream started event")
        assert started["channel_id"] == channel_id and started["device_id"] == DEVICE
        last_id = max(int(e["sse_id"]) for e in first.events)
        first.close()

        # Missed while disconnected: the stream ends.
        assert platform.api("POST", f"/channels/{channel_id}/stop")[0] == 204
        wait_for(lambda: any(e.get("event") == "ended" for e in hooks.events()), 30, "the webhook of the end")

        second = SseClient(platform.http_port, "?types=stream", headers={
            "Authorization": f"Bearer {TOKEN}", "Last-Event-ID": str(last_id)})
        ended = wait_for(lambda: second.find(type="stream", event="ended"), 15, "the replayed stream end")
        assert ended["channel_id"] == channel_id and int(ended["sse_id"]) > last_id
        assert ended["reason"] and ended["duration"] >= 0
        assert all(int(e["sse_id"]) > last_id for e in second.events)
        wait_for(lambda: ": keepalive" in second.comments, 10, "a keepalive comment")

        # The webhook got the same events, in order, signed.
        wait_for(lambda: any(e.get("event") == "started" for e in hooks.events()), 15, "the webhooks")
        ids = [e["id"] for e in hooks.events()]
        assert ids == sorted(ids)
        kinds = {(e["type"], e.get("event")) for e in hooks.events()}
        assert {("device", "registered"), ("channel", "synced"), ("stream", "started"),
                ("stream", "ended")} <= kinds
        for headers, body in hooks.received:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["X-GBPlatform-Signature"] == expected
            assert headers["X-GBPlatform-Delivery"] == str(json.loads(body)["id"])
        by_id = {e["id"]: e for e in hooks.events()}
        assert {k: v for k, v in by_id[started["id"]].items()} == {
            k: v for k, v in started.items() if not k.startswith("sse_")}

        status, stats = platform.api("GET", "/events/stats")
        assert status == 200 and stats["stream"]["clients"] == 1
        assert stats["webhooks"]["targets"][0]["delivered"] >= 4 and stats["published"]["device"] >= 1
        second.close()

        # A request with ?token= is logged with the token as *** (a stream the client left has no line).
        bad = SseClient(platform.http_port, f"?types=weather&token={TOKEN}")
        assert bad.response.status == 400
        bad.close()

        def logged() -> str | None:
            text = Path(platform.log_path).read_text(errors="replace")
            return text if "/api/v1/events?types=weather" in text else None

        text = wait_for(logged, 15, "the event stream's access log line")
        assert TOKEN not in text.replace("GBP_API_TOKEN", "")
        assert re.findall(r"token=(?!\*\*\*)[^\s&\"]+", text) == []
    finally:
        for client in (first, second):
            if client is not None:
                client.close()
        if sim is not None:
            sim.kill()
        hooks.stop()
        platform.stop()
