"""The live sessions' API: play, stop and list (GB/T 28181-2016 §9.2).

``POST /api/v1/channels/<id>/play`` starts (or joins) the channel's live
INVITE session and answers the player URLs; the media itself is served by
``gbplatform.outputs.http`` (FLV, HLS, snapshot) and the RTSP server, which
start a session the same way, with ``open_stream``. ``SessionRoutes`` is
mounted into the root API (``gbplatform.api.app``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from klein import Klein
from msgspec import UNSET
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated
from gbplatform.auth.play_tokens import LIVE
from gbplatform.core.errors import DomainError
from gbplatform.core.errors import NotFound as Missing
from gbplatform.db import queries as q
from gbplatform.sessions.live import LiveStream, LiveStreams
from gbplatform.sessions.shapes import PlayResult, PlayUrls, StreamList

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

__all__ = ["MediaUnavailable", "SessionRoutes", "live_streams", "open_stream"]


class MediaUnavailable(DomainError):
    """The platform runs without a media receiver (API: 503)."""

    status = 503
    code = "media_unavailable"


def live_streams(platform: AppContext) -> LiveStreams:
    """The platform's live sessions; ``MediaUnavailable`` (503) when it runs without a media receiver."""
    live = platform.live
    if live is None:
        raise MediaUnavailable("this platform has no media receiver")
    return live


async def open_stream(platform: AppContext, channel_id: str) -> LiveStream:
    """The channel's running stream, or a new one (INVITE, GB/T 28181-2016 §9.2.2)."""
    live = live_streams(platform)
    stream = live.get(channel_id)
    if stream is not None and stream.state == "playing":
        return stream
    channel = await platform.db.run("get_channel", q.get_channel_txn, channel_id)
    if channel is None:
        raise Missing(f"channel {channel_id} not found")
    return await live.play(channel.device_id, channel_id)


class SessionRoutes(Routes):
    """``/api/v1/channels/<id>/play``, ``.../stop`` and ``/api/v1/streams``."""

    app = Klein()

    @app.route("/api/v1/channels/<channel_id>/play", methods=["POST"])
    @authenticated
    async def play(self, request: Request, channel_id: str) -> bytes:
        stream = await open_stream(self.platform, channel_id)
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        if not host:
            addr = request.getHost()  # type: ignore[no-untyped-call]
            host = f"{addr.host}:{addr.port}"
        # Players open these as given and cannot set headers: they carry a playback
        # token for this channel's live media (RFC 6750 §2.3), never the API token.
        tokens = self.platform.play_tokens
        query = "?token=" + tokens.issue(LIVE, channel_id)
        rtsp_port = self.platform.config.media.rtsp_port
        # The RTSP server listens beside the API: same host name, its own port.
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        urls = PlayUrls(
            http_flv=f"http://{host}/live/{channel_id}.flv{query}",
            hls=f"http://{host}/live/{channel_id}/index.m3u8{query}",
            snapshot=f"http://{host}/api/v1/channels/{channel_id}/snapshot{query}",
            rtsp=f"rtsp://{hostname}:{rtsp_port}/live/{channel_id}{query}" if rtsp_port else UNSET,
        )
        return self._json(request, PlayResult(stream=stream.info(self.platform.clock), urls=urls,
                                              expires_at=schemas.iso_epoch(tokens.expires_at())))

    @app.route("/api/v1/channels/<channel_id>/stop", methods=["POST"])
    @authenticated
    async def stop(self, request: Request, channel_id: str) -> bytes:
        if not live_streams(self.platform).stop(channel_id, "stopped through the API"):
            raise Missing(f"channel {channel_id} is not streaming")
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/streams", methods=["GET"])
    @authenticated
    async def list_streams(self, request: Request) -> bytes:
        live = live_streams(self.platform)
        items = [s.info(self.platform.clock) for _, s in sorted(live.streams.items())]
        return self._json(request, StreamList(items=items))
