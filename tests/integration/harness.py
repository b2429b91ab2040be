"""Run ``gbplatform run`` and ``gbplatform simulate`` as real processes on 127.0.0.1.

End-to-end tests talk to the platform only the way users and devices do:
SIP on its port, JSON on its HTTP API. Waiting is polling with a deadline
(the processes are real, so is their time); nothing asserts on durations.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOKEN = "e2e-token"
# Short segments and frequent checks, so recording tests see segments close within seconds.
RECORDING_ENV = {
    "GBP_RECORD_SEGMENT_SECONDS": "4",
    "GBP_RECORD_CHECK_INTERVAL": "1",
    "GBP_RECORD_RETENTION_INTERVAL": "1",
    "GBP_RECORD_MIN_FREE_BYTES": "0",
    "GBP_RECORD_TIMEZONE": "UTC",
}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no free port")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class PlatformProcess:
    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.sip_port = free_port()
        self.http_port = free_port()
        self.rtsp_port = free_port()
        self.log_path = data_dir / "platform.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "GBP_SIP_HOST": "127.0.0.1",
                "GBP_SIP_PORT": str(self.sip_port),
                "GBP_HTTP_HOST": "127.0.0.1",
                "GBP_HTTP_PORT": str(self.http_port),
                "GBP_STORAGE_DATA_DIR": str(self.data_dir),
                "GBP_API_TOKEN": TOKEN,
                "GBP_MEDIA_RTSP_PORT": str(self.rtsp_port),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> PlatformProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gbplatform", "run"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(self._healthy, 30, "the platform's health endpoint")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"platform exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.api("GET", "/health", auth=False)[0] == 200
        except OSError:
            return False

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"platform did not stop on SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def api(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/v1{path}", data=data, method=method
        )
        if auth:
            req.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def first_channel(self, device_id: str, timeout: float = 60) -> str:
        """The first channel of ``device_id``'s catalog, once a sync has stored it."""

        def find() -> str | None:
            status, body = self.api("GET", f"/devices/{device_id}/channels")
            items = body["items"] if status == 200 else []
            return str(items[0]["channel_id"]) if items else None

        channel_id: str = wait_for(find, timeout, f"a channel of {device_id} in the catalog")
        return channel_id

    def get_bytes(self, path: str) -> bytes:
        """GET a media or download URL of this platform with the admin token."""
        sep = "&" if "?" in path else "?"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}{sep}token={TOKEN}", timeout=30) as r:
            data: bytes = r.read()
            return data

    def devices(self, **query: str) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={v}" for k, v in {"limit": "500", **query}.items())
        status, body = self.api("GET", f"/devices?{qs}")
        assert status == 200, body
        return list(body["items"])


class SimulatorProcess:
    def __init__(self, platform: PlatformProcess, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gbplatform", "simulate", "--server", f"127.0.0.1:{platform.sip_port}", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
