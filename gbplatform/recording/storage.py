"""Where recordings live: a local directory (or NAS mount), optionally S3-compatible object storage.

Theory of operation
-------------------
Segments are always written to ``LocalStorage`` first (the writer thread
needs a file it can append to and a crash can leave behind). A NAS mount is
the same backend: what differs is that it can hang, so ``LocalStorage``
checks its health with a probe (create, write, fsync, delete a small file)
in a thread of its own and calls the mount hung when the probe has not
finished within ``timeout`` seconds; a hung probe thread is never joined and
no second one is started while it hangs.

With the S3 backend, ``S3Storage`` uploads closed segments from the
``Uploader`` thread (boto3 ``upload_file``: multipart above
``multipart_bytes``, each part retried by botocore, the whole upload retried
here with backoff), keeps the local copy ``keep_local_hours`` and reads
byte ranges back with ranged GETs (RFC 9110 §14.2) for playback.

Every method here blocks: call them from a writer/uploader thread or
``deferToThread``, never from the reactor.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.logger import Logger

log = Logger()

__all__ = ["DiskState", "LocalStorage", "S3Storage", "Uploader"]


@dataclass(frozen=True)
class DiskState:
    total: int
    used: int
    free: int


class LocalStorage:
    """A recordings directory on a local disk or a NAS mount."""

    name = "local"

    def __init__(self, root: Path, *, timeout: float = 10.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.timeout = timeout
        self.monotonic = monotonic
        self.healthy = True
        self.health_error: str | None = None
        self.last_disk: DiskState | None = None  # from the last probe that finished
        self._probe: threading.Thread | None = None
        self._probe_started = 0.0
        self._probe_error: str | None = None

    def path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad segment key {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read(self, key: str, offset: int, length: int | None) -> bytes:
        with open(self.path(key), "rb") as f:
            f.seek(offset)
            return f.read() if length is None else f.read(length)

    def open(self, key: str) -> Any:
        return open(self.path(key), "rb")  # noqa: SIM115 - the caller closes it

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        # Remove the day and channel directories once empty.
        for parent in (path.parent, path.parent.parent):
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def disk(self) -> DiskState:
        self.root.mkdir(parents=True, exist_ok=True)
        usage = shutil.disk_usage(self.root)
        return DiskState(usage.total, usage.used, usage.free)

    def files(self) -> list[str]:
        """Every ``.ts`` file under the root, as keys."""
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.ts") if p.is_file())

    # -- health -----------------------------------------------------------------------
    def check_health(self) -> bool:
        """Non-blocking: start a probe if none runs, judge the one that runs (see the module docstring)."""
        probe = self._probe
        now = self.monotonic()
        if probe is not None and probe.is_alive():
            if now - self._probe_started > self.timeout:
                self.healthy = False
                self.health_error = f"storage probe hung for {now - self._probe_started:.0f} s (hung mount?)"
            return self.healthy
        if probe is not None:
            self.healthy = self._probe_error is None
            self.health_error = self._probe_error
        self._probe_error = None
        self._probe_started = now
        self._probe = threading.Thread(target=self._run_probe, name="gbplatform-storage-probe", daemon=True)
        self._probe.start()
        return self.healthy

    def _run_probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".probe"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"gbplatform")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
            usage = shutil.disk_usage(self.root)
            self.last_disk = DiskState(usage.total, usage.used, usage.free)
        except OSError as e:
            self._probe_error = f"storage probe failed: {e}"

    def probe_now(self) -> str | None:
        """Run the probe on the calling thread; the error, or None (tests, start-up)."""
        self._run_probe()
        error, self._probe_error = self._probe_error, None
        self.healthy = error is None
        self.health_error = error
        return error


class S3Storage:
    """An S3-compatible bucket (AWS, MinIO, Ceph RGW) through boto3."""

    name = "s3"

    def __init__(self, *, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str,
                 prefix: str = "", multipart_bytes: int = 8 * 1024 * 1024, timeout: float = 10.0,
                 attempts: int = 4) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix
        self.client = boto3.client(
            "s3", endpoint_url=endpoint or None, region_name=region or None,
            aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
            config=BotoConfig(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=timeout,
                              read_timeout=timeout * 3, s3={"addressing_style": "path"}),
        )
        self.transfer = TransferConfig(multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes,
                                       max_concurrency=4, use_threads=True)

    def object_key(self, key: str) -> str:
        return self.prefix + key

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.client.create_bucket(Bucket=self.bucket)
            log.info("S3 bucket {bucket} created", bucket=self.bucket)

    def upload(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, self.object_key(key), Config=self.transfer,
                                ExtraArgs={"ContentType": "video/mp2t"})

    def read(self, key: str, offset: int, length: int | None) -> bytes:
        rng = f"bytes={offset}-" if length is None else f"bytes={offset}-{offset + length - 1}"
        response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), Range=rng)
        data: bytes = response["Body"].read()
        return data

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))


class Uploader:
    """One thread uploading closed segments to S3, with retries (see the module docstring)."""

    def __init__(self, local: LocalStorage, s3: S3Storage, *, done: Callable[[int, str | None], None],
                 attempts: int = 3, backoff: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.local = local
        self.s3 = s3
        self.done = done  # (segment id, error or None), called on the uploader thread
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.failures = 0
        self.uploaded = 0
        self.uploaded_bytes = 0
        self._queue: list[tuple[int, str]] = []
        self._queued: set[int] = set()
        self._busy: int | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy is not None else 0)

    def submit(self, segment_id: int, key: str) -> None:
        with self._cond:
            if segment_id in self._queued or segment_id == self._busy:
                return
            self._queue.append((segment_id, key))
            self._queued.add(segment_id)
            self._cond.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gbplatform-s3-upload", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                segment_id, key = self._queue.pop(0)
                self._queued.discard(segment_id)
                self._busy = segment_id
            try:
                self.upload_one(segment_id, key)
            finally:
                with self._cond:
                    self._busy = None

    def upload_one(self, segment_id: int, key: str) -> bool:
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                path = self.local.path(key)
                self.s3.upload(path, key)
                self.uploaded += 1
                self.uploaded_bytes += path.stat().st_size
                error = None
                break
            except Exception as e:  # noqa: BLE001 - boto3/botocore/OS errors alike: retried, then reported
                error = f"upload of {key} failed (attempt {attempt}/{self.attempts}): {e}"
                log.warn("{error}", error=error)
                if attempt < self.attempts:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
        if error is not None:
            self.failures += 1
        try:
            self.done(segment_id, error)
        except Exception:  # noqa: BLE001 - the thread must survive a reporting error
            log.failure("reporting the upload of {key} failed", key=key)
        return error is None
