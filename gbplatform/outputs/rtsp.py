"""Live channels on the RTSP server: ``LiveSource``, the ``media.rtsp_server.StreamSource``.

The RTSP server itself (RFC 2326) is sans-IO in ``media/``; this adapter
starts a channel's live session the way the HTTP outputs do
(``gbplatform.sessions.http.open_stream``) and maps domain errors to RTSP
statuses (RFC 2326 §7.1.1): unknown channel 404, every device or media
error 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gbplatform.core.errors import DomainError, NotFound
from gbplatform.sessions.http import open_stream
from gbplatform.sessions.live import LiveStream, LiveStreams
from media.rtsp import RtpSender, RtspError

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

__all__ = ["LiveSource"]


class LiveSource:
    """``rtsp://<host>:<rtsp_port>/live/<channel>``: see the module docstring."""

    def __init__(self, platform: AppContext) -> None:
        self.platform = platform

    def _live(self) -> LiveStreams:
        if self.platform.live is None:
            raise RtspError(503, "this platform has no media receiver")
        return self.platform.live

    async def open(self, channel_id: str) -> LiveStream:
        try:
            return await open_stream(self.platform, channel_id)
        except NotFound as e:
            raise RtspError(404, e.message) from None
        except DomainError as e:
            raise RtspError(503, e.message) from None

    def attach(self, stream: LiveStream, sink: RtpSender) -> None:
        self._live().attach(stream, sink)

    def viewer_started(self, stream: LiveStream, peer: str) -> Callable[[], None]:
        """Note an RTSP viewer in the stream's timeline; the sender calls the result at its first frame."""
        return self._live().viewer_started(stream, "rtsp", peer)

    def detach(self, stream: LiveStream, sink: RtpSender) -> None:
        self._live().detach(stream, sink)
