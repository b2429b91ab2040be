"""``RecordingService``: the recording manager in the platform's ``MultiService``.

Started after the database and SIP (recovery needs the registry, recorded
channels need INVITEs), stopped before them: ``MultiService`` stops its
children in reverse order, so the last segments are closed and indexed while
the database is still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from gbplatform.recording.manager import RecordingManager
from gbplatform.recording.storage import S3Storage

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

log = Logger()

__all__ = ["RecordingService", "make_recording"]


def make_recording(platform: AppContext, reactor: IReactorFromThreads) -> RecordingManager:
    """The platform's recording manager, on ``reactor``'s thread hand-off."""
    cfg = platform.config.record
    s3 = None
    if cfg.backend == "s3":
        s3 = S3Storage(endpoint=cfg.s3_endpoint, bucket=cfg.s3_bucket, access_key=cfg.s3_access_key,
                       secret_key=cfg.s3_secret_key, region=cfg.s3_region, prefix=cfg.s3_prefix,
                       multipart_bytes=cfg.s3_multipart_bytes, timeout=cfg.nas_timeout)
    return RecordingManager(
        cfg, data_dir=Path(platform.config.storage.data_dir), db=platform.db, clock=platform.clock,
        live=platform.live, devices=platform.devices,
        call_from_thread=lambda f, *args: reactor.callFromThread(f, *args),
        run_in_thread=deferToThread, s3=s3, workers=platform.workers,
    )


class RecordingService(Service):
    name = "recording"

    def __init__(self, manager: RecordingManager) -> None:
        self.manager = manager

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        m = self.manager
        log.info("recording to {root} ({backend}), {s:g} s segments", root=str(m.storage.root), backend=m.backend,
                 s=m.config.segment_seconds)
        d = ensureDeferred(m.start())
        d.addErrback(lambda f: log.failure("starting recording failed", f))

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        d = ensureDeferred(self.manager.stop())
        d.addErrback(lambda f: log.failure("stopping recording failed", f))
        return d
