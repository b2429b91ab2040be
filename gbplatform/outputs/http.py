"""Streaming outputs to clients: HTTP-FLV, HLS (RFC 8216) and the snapshot JPEG.

``OutputRoutes`` is mounted into the root API (``gbplatform.api.app``).
The media routes are opened by players, which cannot set headers, so they
also take the token as ``?token=`` (RFC 6750 §2.3): the API token or a
playback token for the channel (``gbplatform.auth.play_tokens``). Each
starts the channel's live session on demand (``gbplatform.sessions.http.open_stream``).

``GET /live/<channel>.flv`` answers ``video/x-flv`` without a
Content-Length (chunked), attaches one ``FlvSink`` per connection (the GOP
cache replays first, so playback starts on a keyframe; with the cache off
the sink waits for the next one), detaches it when the client goes away and
finishes the response when the stream ends.

``GET /api/v1/channels/<channel>/snapshot`` answers one JPEG of the
stream's latest keyframe (kept whether or not the GOP cache is on), waiting
up to ``SNAPSHOT_WAIT`` seconds for a first keyframe. Decoding and encoding
run in a worker thread (the ``snapshot`` pool of ``gbplatform.core.workers``),
never on the reactor.

HLS is ``GET /live/<channel>/index.m3u8`` and ``GET /live/<channel>/seg<n>.ts``.
The playlist attaches one shared ``HlsSegmenter`` per stream, then waits up
to ``HLS_WAIT`` seconds for a first segment. HLS clients hold no
connection, so the segmenter counts as a viewer while playlist or segment
requests keep coming: it is detached ``HLS_IDLE`` seconds after the last
one, and the stream's idle teardown then applies.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from gbplatform.api.routing import Routes, Web, set_header
from gbplatform.auth.play_tokens import LIVE
from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.core.errors import DomainError
from gbplatform.core.errors import NotFound as Missing
from gbplatform.sessions.http import live_streams, open_stream
from gbplatform.sessions.live import LiveStream
from media.flv import FlvSink
from media.frame import Frame
from media.hls import HLS_TYPE, TS_TYPE, HlsSegmenter
from media.snapshot import SnapshotError, snapshot_jpeg

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

__all__ = ["FLV_TYPE", "JPEG_TYPE", "OutputRoutes", "channel_snapshot", "wait_keyframe"]

log = Logger()

FLV_TYPE = b"video/x-flv"

JPEG_TYPE = b"image/jpeg"

# The first segment is cut at the second keyframe: one GOP (often 1-2 s,
# GB/T 28181-2016 §9.2 sets no bound) after the first one arrives.
HLS_WAIT = 8.0
HLS_POLL = 0.1
# A client reloads the playlist every target duration (RFC 8216 §6.3.4);
# silence this long means it has gone, and the segmenter stops counting.
HLS_IDLE = 20.0

# A device sends a keyframe every GOP (often 1-2 s; GB/T 28181-2016 §9.2 sets
# no bound), so a fresh stream needs a few seconds for its first one.
SNAPSHOT_WAIT = 5.0
SNAPSHOT_POLL = 0.1


class NoKeyframe(DomainError):
    """The stream sent no keyframe within ``SNAPSHOT_WAIT`` (API: 503)."""

    status = 503
    code = "no_keyframe"


class NoSegment(DomainError):
    """The stream gave no HLS segment within ``HLS_WAIT`` (API: 503)."""

    status = 503
    code = "no_segment"


@dataclass
class _Hls:
    """One stream's shared segmenter and the timer that detaches it when unwatched."""

    stream: LiveStream
    segmenter: HlsSegmenter
    timer: DelayedCallLike | None = None
    on_closed: Callable[[LiveStream], None] | None = None


class BadPicture(DomainError):
    """The device's keyframe does not decode (API: 502)."""

    status = 502
    code = "bad_picture"


async def _sleep(clock: Clock, seconds: float) -> None:
    tick: Deferred[None] = Deferred()
    call = clock.call_later(seconds, tick.callback, None)
    try:
        await tick
    finally:
        # Klein cancels the route's Deferred when the client goes away.
        if call.active():
            call.cancel()


def _no_delay(request: Request) -> None:
    """TCP_NODELAY on a media response's connection: frames are paced by the source, not by Nagle (RFC 896)."""
    transport = getattr(getattr(request, "channel", None), "transport", None)
    no_delay = getattr(transport, "setTcpNoDelay", None)
    if no_delay is not None:
        no_delay(True)


def _peer(request: Request) -> str:
    addr = request.getClientAddress()  # type: ignore[no-untyped-call]
    return f"{getattr(addr, 'host', addr)}:{getattr(addr, 'port', '')}"


async def wait_keyframe(clock: Clock, stream: LiveStream) -> Frame:
    """The stream's latest keyframe, polled on the clock for up to ``SNAPSHOT_WAIT``."""
    deadline = clock.seconds() + SNAPSHOT_WAIT
    while True:
        keyframe = stream.dispatcher.keyframe
        if keyframe is not None:
            return keyframe
        if stream.state != "playing":
            raise NoKeyframe(f"channel {stream.channel_id}: the stream ended ({stream.state}) "
                             "before a keyframe")
        left = deadline - clock.seconds()
        if left <= 0:
            raise NoKeyframe(f"channel {stream.channel_id}: no keyframe within {SNAPSHOT_WAIT:g} s")
        await _sleep(clock, min(SNAPSHOT_POLL, left))


async def channel_snapshot(platform: AppContext, channel_id: str, run: Callable[..., Deferred[Any]]) -> bytes:
    """One JPEG of the channel's latest keyframe, starting its stream if none runs (the snapshot route's
    work, shared with snapshot-on-alarm: ``gbplatform.alarms``); ``run`` does the decoding off the reactor."""
    stream = await open_stream(platform, channel_id)
    frame = await wait_keyframe(platform.clock, stream)
    try:
        jpeg: bytes = await run(snapshot_jpeg, frame)
    except SnapshotError as e:
        log.warn("channel {id}: no snapshot from its keyframe: {error}", id=channel_id, error=e)
        raise BadPicture(f"channel {channel_id}: the keyframe does not decode ({e})") from e
    return jpeg


class OutputRoutes(Routes):
    """``/live/<id>.flv``, ``/live/<id>/index.m3u8``, ``/live/<id>/seg<n>.ts`` and ``.../snapshot``."""

    app = Klein()

    def __init__(self, web: Web) -> None:
        super().__init__(web)
        self._hls: dict[str, _Hls] = {}

    @app.route("/api/v1/channels/<channel_id>/snapshot", methods=["GET"])
    async def snapshot(self, request: Request, channel_id: str) -> bytes:
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        jpeg = await channel_snapshot(self.platform, channel_id, self._blocking("snapshot"))
        request.setResponseCode(200)
        set_header(request, b"Content-Type", JPEG_TYPE)
        set_header(request, b"Cache-Control", b"no-store")
        return jpeg

    @app.route("/live/<channel_id>.flv", methods=["GET"])
    async def live_flv(self, request: Request, channel_id: str) -> bytes:
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        live = live_streams(self.platform)
        stream = await open_stream(self.platform, channel_id)
        request.setResponseCode(200)
        set_header(request, b"Content-Type", FLV_TYPE)
        set_header(request, b"Cache-Control", b"no-store")
        # A frame's tail must not wait for the ACK of the previous frame
        # (delayed ACK holds it up to 40 ms, a frame interval at 25 fps).
        _no_delay(request)
        # Headers now: the FLV header only goes out with the first keyframe,
        # and a player should not time out on the status line meanwhile.
        request.write(b"")  # type: ignore[no-untyped-call]
        ended: Deferred[None] = Deferred()

        def closed(_: LiveStream) -> None:
            if not ended.called:
                ended.callback(None)

        sink = FlvSink(write=request.write, tracks=stream.dispatcher.tracks, ready=stream.tracks_known,
                       on_start=live.viewer_started(stream, "http-flv", _peer(request)))
        stream.on_closed.append(closed)
        live.attach(stream, sink)
        log.info("channel {id}: HTTP-FLV viewer {peer} attached ({n} watching)", id=channel_id,
                 peer=_peer(request), n=stream.viewers)
        try:
            # Klein cancels this Deferred when the client disconnects.
            await ended
        finally:
            live.detach(stream, sink)
            if closed in stream.on_closed:
                stream.on_closed.remove(closed)
            log.info("channel {id}: HTTP-FLV viewer {peer} left ({n} watching)", id=channel_id,
                     peer=_peer(request), n=stream.viewers)
        return b""

    def _hls_touch(self, entry: _Hls) -> None:
        """Restart the countdown after which an unrequested segmenter stops being a viewer."""
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = self.platform.clock.call_later(HLS_IDLE, self._hls_drop, entry, "no HLS request")

    def _hls_drop(self, entry: _Hls, why: str) -> None:
        if self._hls.get(entry.stream.channel_id) is entry:
            del self._hls[entry.stream.channel_id]
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        if entry.stream.state == "playing" and entry.on_closed in entry.stream.on_closed:
            # A closing stream is running its callbacks: its list is not ours to change.
            entry.stream.on_closed.remove(entry.on_closed)
        live = self.platform.live
        if live is not None:
            live.detach(entry.stream, entry.segmenter)
        log.info("channel {id}: HLS output detached ({why})", id=entry.stream.channel_id, why=why)

    def _hls_for(self, stream: LiveStream) -> _Hls:
        """The stream's shared segmenter, attached as one viewer on first use."""
        entry = self._hls.get(stream.channel_id)
        if entry is not None and entry.stream is stream:
            return entry
        if entry is not None:
            self._hls_drop(entry, "the stream was replaced")
        entry = _Hls(stream, HlsSegmenter())
        self._hls[stream.channel_id] = entry

        def closed(_: LiveStream) -> None:
            self._hls_drop(entry, f"the stream ended ({stream.state})")

        entry.on_closed = closed
        stream.on_closed.append(closed)
        live_streams(self.platform).attach(stream, entry.segmenter)
        log.info("channel {id}: HLS output attached ({n} watching)", id=stream.channel_id, n=stream.viewers)
        return entry

    async def _first_segment(self, entry: _Hls) -> None:
        """Poll on the clock for up to ``HLS_WAIT`` until the playlist lists a segment."""
        clock = self.platform.clock
        deadline = clock.seconds() + HLS_WAIT
        while not entry.segmenter.segments:
            stream = entry.stream
            if stream.state != "playing":
                raise NoSegment(f"channel {stream.channel_id}: the stream ended ({stream.state}) "
                                "before a first HLS segment")
            left = deadline - clock.seconds()
            if left <= 0:
                raise NoSegment(f"channel {stream.channel_id}: no HLS segment within {HLS_WAIT:g} s")
            await _sleep(clock, min(HLS_POLL, left))

    @app.route("/live/<channel_id>/index.m3u8", methods=["GET"])
    async def live_hls(self, request: Request, channel_id: str) -> bytes:
        token = request.args.get(b"token", [None])[0]
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        stream = await open_stream(self.platform, channel_id)
        entry = self._hls_for(stream)
        self._hls_touch(entry)
        await self._first_segment(entry)
        # Players cannot set headers on segment requests either: the segment
        # URIs carry the playlist's own ?token= (RFC 6750 §2.3).
        suffix = "" if token is None else "?token=" + urllib.parse.quote(token.decode("utf-8", "replace"), safe="")
        request.setResponseCode(200)
        set_header(request, b"Content-Type", HLS_TYPE)
        set_header(request, b"Cache-Control", b"no-store")
        return entry.segmenter.playlist(suffix).encode("ascii")

    @app.route("/live/<channel_id>/seg<int:n>.ts", methods=["GET"])
    async def live_hls_segment(self, request: Request, channel_id: str, n: int) -> bytes:
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        entry = self._hls.get(channel_id)
        data = entry.segmenter.segment(n) if entry is not None else None
        if entry is None or data is None:
            raise Missing(f"channel {channel_id} has no HLS segment {n}")
        self._hls_touch(entry)
        request.setResponseCode(200)
        set_header(request, b"Content-Type", TS_TYPE)
        return data
