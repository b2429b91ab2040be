"""Twisted edge of the RTSP server (RFC 2326): live channels as ``rtsp://host/live/<channel>``,
recordings as ``rtsp://host/vod/<channel>?start=<epoch>&end=<epoch>``.

Theory of operation (the aioquic adapter pattern): ``RtspProtocol`` feeds
bytes and ``reactor.seconds()`` to a sans-IO ``RtspServerConnection``, runs
the events it returns one after another (a DESCRIBE that waits for a
keyframe must not let a pipelined SETUP overtake it), writes what the core
queued and re-arms one timer for the session timeout.

* DESCRIBE starts the channel's stream through ``StreamSource.open`` and
  waits up to ``keyframe_timeout`` seconds for the stream's tracks
  (``FrameDispatcher.tracks``) to be ready: a keyframe, whose parameter sets
  go in the SDP (RFC 6184 §8.1, RFC 7798 §7.1), and the audio track if the
  stream has one (PCMA/PCMU, RFC 3551; AAC as mpeg4-generic, RFC 3640).
  A stream object with a ``tracks_known()`` method (the platform's
  ``LiveStream``) may say so sooner, at the first keyframe of a stream that
  carries no audio. The wait is a watcher on the dispatcher, woken by the
  frame that completes the tracks, not a poll: the answer leaves in the same
  reactor turn (a 100 ms poll cost a first viewer 50 ms on average).
* SETUP of ``trackID=0`` (video) or ``trackID=1`` (audio) picks that track's
  transport: interleaved on this connection (§10.12), or UDP from two server
  sockets (RTP, RTCP) to the client's ``client_port`` pair at the control
  connection's peer address (§12.39). Each track of each viewer has its own
  packetizer, so its own SSRC, sequence and timestamp offset (RFC 3550 §5.1).
* PLAY answers with ``RTP-Info`` for every track set up (§12.33), their
  ``rtptime`` all naming the GOP's first PTS so a player lines audio up with
  video, then attaches one ``RtpSender`` for all tracks: the stream's
  dispatcher replays the GOP cache, then live frames follow.
* TEARDOWN, the session timeout, the connection closing and the stream
  ending all detach the viewer and close its UDP sockets; the last two also
  close the connection.

Backpressure on TCP: this protocol is the transport's streaming producer;
Twisted pauses it when its write buffer fills and ``RtpSender`` drops frames
to the next keyframe once 4 MiB are written while paused.

Recordings (``VodSource``, ``media.rtsp_vod``): DESCRIBE opens the range
(cached per connection for the SETUPs that follow) and answers its tracks
with ``a=range:npt=0-<duration>``. PLAY creates a ``VodPlayer`` once, then
seeks (``Range``) or resumes and sets the speed (``Scale``); ``_VodPlayback``
sends what the player says is due on the reactor clock, asks the source for
the next GOPs (read in a worker thread by the source) and, at the end, sends
an RTCP SR + BYE per track (a player such as FFmpeg then ends the stream);
the session stays until TEARDOWN. While the TCP transport is paused nothing
is polled, so nothing is dropped and no more GOPs are read.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from media.frame import Codec
from media.packetize import (
    AacPacketizer,
    G711Packetizer,
    H264Packetizer,
    H265Packetizer,
    MissingParameterSets,
    audio_payload_type,
    sdp_audio,
    sdp_media,
)
from media.pipeline import FrameDispatcher, StreamTracks, VideoTrack
from media.rtsp import (
    AUDIO_TRACK,
    VIDEO_TRACK,
    AudioPacketizer,
    Describe,
    Packetizer,
    Pause,
    Play,
    PlaybackCheck,
    RtpSender,
    RtspError,
    RtspEvent,
    RtspRequest,
    RtspServerConnection,
    SessionExpired,
    Setup,
    Teardown,
    Transport,
    build_sdp,
    interleave,
)
from media.rtsp_vod import VodMedia, VodPlayer, rtcp_sr_bye

log = logging.getLogger(__name__)

__all__ = ["RtspFactory", "RtspProtocol", "StreamSource", "VodSource"]

PAYLOAD_TYPE = 96  # dynamic (RFC 3551 §6)
KEYFRAME_TIMEOUT = 5.0

ListenUdp = Callable[[int, protocol.DatagramProtocol], Any]


class LiveStreamLike(Protocol):
    dispatcher: FrameDispatcher
    on_closed: list[Callable[[Any], None]]


class StreamSource(Protocol):
    """Where channels' streams come from (the platform's ``LiveStreams``).

    ``open`` raises ``RtspError`` (404 unknown channel, 503 device errors).
    """

    async def open(self, channel_id: str) -> Any: ...

    def attach(self, stream: Any, sink: RtpSender) -> None: ...

    def detach(self, stream: Any, sink: RtpSender) -> None: ...


class VodSource(Protocol):
    """Where recorded ranges come from (``gbplatform.recording.rtsp_vod``).

    ``open`` raises ``RtspError`` (404 nothing recorded in the range, 503 recording off).
    """

    async def open(self, channel_id: str, start: float, end: float) -> VodMedia: ...


class _RtcpIgnorer(protocol.DatagramProtocol):
    """Server-side RTP/RTCP socket of a UDP viewer; the client's RTCP RRs are not used."""

    noisy = False  # one per viewer: no start/stop lines in the log

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 - Twisted's name
        log.debug("RTSP: ignoring %d-byte datagram from %s (RTCP RR / NAT punch)", len(datagram), addr)


class _Track:
    """What one SETUP made: the track's packetizer, transport, UDP sockets if any."""

    def __init__(self, uri: str, packetizer: Packetizer | AudioPacketizer, transport: Transport) -> None:
        self.uri = uri  # as the client named it: RTP-Info repeats it (§12.33)
        self.packetizer = packetizer
        self.transport = transport
        self.ports: list[Any] = []
        self.rtp: _RtcpIgnorer | None = None
        self.rtcp: _RtcpIgnorer | None = None
        self.dest: tuple[str, int] | None = None

    def close(self) -> None:
        for port in self.ports:
            port.stopListening()
        self.ports = []


class _Viewer:
    """One session's stream, its tracks by trackID, and the sender once playing."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tracks: dict[int, _Track] = {}
        self.sender: RtpSender | None = None
        self.vod: _VodPlayback | None = None


class _VodPlayback:
    """One session's recorded playback: poll the player on the reactor clock, read GOPs, end with BYE."""

    def __init__(self, proto: RtspProtocol, media: VodMedia, sender: RtpSender) -> None:
        self.proto = proto
        self.reactor = proto.factory.reactor
        self.media = media
        self.sender = sender
        self.player = VodPlayer(media.gops, media.duration, has_audio=media.audio is not None)
        self.blocked = False  # the TCP transport asked us to pause
        self.stopped = False
        self.bye_sent = False
        self._timer: Any = None

    def kick(self) -> None:
        """Send what is due, start reads, send BYE at the end, re-arm the timer."""
        if self.stopped or self.proto.closed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        player = self.player
        if not self.blocked:
            for frame in player.poll(self.reactor.seconds()):
                self.sender.input_frame(frame)
        if player.playing and player.ended and not self.bye_sent:
            self.bye_sent = True
            self.proto._send_bye()
            log.info("RTSP: recording played to its end (%d frames); BYE sent", player.frames_sent)
        for index in player.loads():
            self._read(index)
        deadline = player.next_deadline()
        if deadline is not None and not self.blocked:
            self._timer = self.reactor.callLater(max(deadline - self.reactor.seconds(), 0.0), self.kick)

    def _read(self, index: int) -> None:
        generation = self.player.generation
        d: defer.Deferred[Any] = defer.ensureDeferred(_await(self.media.load(index)))

        def loaded(frames: list[Any]) -> None:
            self.player.gop_loaded(index, generation, frames)
            self.kick()

        def failed(f: Failure) -> None:
            log.warning("RTSP: reading GOP %d of a recording failed, skipping it: %s", index, f.getErrorMessage())
            self.player.gop_loaded(index, generation, [])
            self.kick()

        d.addCallbacks(loaded, failed)

    def block(self) -> None:
        self.blocked = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def unblock(self) -> None:
        self.blocked = False
        self.kick()

    def stop(self) -> None:
        self.stopped = True
        self.block()


async def _await(awaitable: Any) -> Any:
    return await awaitable


class RtspProtocol(protocol.Protocol):
    def __init__(self, factory: RtspFactory) -> None:
        self.factory = factory
        self.core = RtspServerConnection(token=factory.token, rng=factory.rng, playback=factory.playback)
        self.viewer: _Viewer | None = None
        self._queue: defer.Deferred[None] = defer.succeed(None)
        self._timer: Any = None
        self._stream_closed: Callable[[Any], None] | None = None
        self._producing = False
        self.closed = False
        self._vod_media: tuple[tuple[str, tuple[float, float]], Any] | None = None

    @property
    def _tcp(self) -> Any:
        # Twisted's zope interfaces do not type-check as method signatures.
        return self.transport

    # -- Twisted -------------------------------------------------------------------
    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        # Media is paced by the source, not by Nagle (RFC 896): a frame's tail
        # must not wait for the ACK of the previous one, which a delayed-ACK
        # peer holds back up to 40 ms, one frame interval at 25 fps.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        events = self.core.receive_data(data, self.factory.reactor.seconds())
        for event in events:
            self._enqueue(event)
        self._flush()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.closed = True
        self._stop("connection closed")
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # IPushProducer, registered on TCP-interleaved PLAY.
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        if self.viewer is not None and self.viewer.sender is not None:
            self.viewer.sender.pause()
        if self.viewer is not None and self.viewer.vod is not None:
            self.viewer.vod.block()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        if self.viewer is not None and self.viewer.sender is not None:
            self.viewer.sender.resume()
        if self.viewer is not None and self.viewer.vod is not None:
            self.viewer.vod.unblock()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._stop("transport stopped")

    # -- plumbing --------------------------------------------------------------------
    def _enqueue(self, event: RtspEvent) -> None:
        def run(_: object) -> defer.Deferred[None]:
            return defer.ensureDeferred(self._handle(event))

        def failed(f: Failure) -> None:
            log.error("RTSP: handling %s failed: %s", type(event).__name__, f.getTraceback())
            request = getattr(event, "request", None)
            if isinstance(request, RtspRequest) and not self.closed:
                self.core.respond(request, 500)
                self._flush()

        self._queue.addCallback(run)
        self._queue.addErrback(failed)

    def _flush(self) -> None:
        if self.closed:
            return
        data = self.core.data_to_send()
        if data:
            self._tcp.write(data)
        if self.core.closing:
            self._tcp.loseConnection()
            return
        self._arm()

    def _arm(self) -> None:
        deadline = self.core.next_timer()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(deadline - self.factory.reactor.seconds(), 0.0)
            self._timer = self.factory.reactor.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for event in self.core.handle_timer(self.factory.reactor.seconds()):
            self._enqueue(event)
        self._flush()

    # -- events -------------------------------------------------------------------------
    async def _handle(self, event: RtspEvent) -> None:
        if self.closed:
            return
        try:
            if isinstance(event, Describe):
                await self._describe(event)
            elif isinstance(event, Setup):
                await self._setup(event)
            elif isinstance(event, Play):
                if event.session.app == "vod":
                    self._vod_play(event)
                else:
                    self._play(event)
            elif isinstance(event, Pause):
                self._vod_pause(event)
            elif isinstance(event, Teardown):
                self._stop("TEARDOWN")
            elif isinstance(event, SessionExpired):
                log.info("RTSP session %s timed out", event.session.id)
                self._stop("session timeout")
                if not self.closed:
                    self._tcp.loseConnection()
        except RtspError as e:
            log.info("RTSP %s: %d %s", type(event).__name__, e.status, e)
            if not self.closed and not isinstance(event, (Teardown, SessionExpired)):
                self.core.respond(event.request, e.status)
        self._flush()

    async def _tracks(self, channel_id: str) -> tuple[Any, StreamTracks]:
        """The channel's stream once its tracks are known (a keyframe, audio or not)."""
        stream = await self.factory.source.open(channel_id)
        dispatcher: FrameDispatcher = stream.dispatcher
        tracks = dispatcher.tracks
        known: Callable[[], bool] | None = getattr(stream, "tracks_known", None)

        def ready() -> bool:
            return tracks.video is not None and (tracks.ready or (known is not None and known()))

        if not ready():
            timeout = self.factory.keyframe_timeout
            if not await _TracksWatch(dispatcher, ready, self.factory.reactor).wait(timeout):
                if tracks.video is None:
                    raise RtspError(503, f"no keyframe from channel {channel_id} within {timeout:g} s")
                # The audio probe outlived the wait: serve what is known.
        return stream, tracks

    async def _open(self, channel_id: str, vod: tuple[float, float] | None) -> tuple[Any, StreamTracks]:
        """The live stream, or for ``vod`` the recorded range, and its tracks."""
        if vod is None:
            return await self._tracks(channel_id)
        key = (channel_id, vod)
        if self._vod_media is not None and self._vod_media[0] == key:
            media = self._vod_media[1]
        else:
            if self.factory.vod is None:
                raise RtspError(404, "this server plays no recordings")
            media = await self.factory.vod.open(channel_id, *vod)
            self._vod_media = (key, media)
        tracks = StreamTracks()
        tracks.video = VideoTrack(media.video.codec, media.video)
        tracks.audio = media.audio
        tracks.ready = True
        return media, tracks

    async def _describe(self, event: Describe) -> None:
        stream, tracks = await self._open(event.channel_id, event.vod)
        video = tracks.video
        assert video is not None
        try:
            media = sdp_media(video.codec, video.keyframe, PAYLOAD_TYPE, f"trackID={VIDEO_TRACK}")
        except MissingParameterSets as e:
            raise RtspError(503, str(e)) from None
        audio = tracks.audio
        if audio is not None:
            media += sdp_audio(audio, audio_payload_type(audio.codec), f"trackID={AUDIO_TRACK}")
        host = self._tcp.getHost()
        npt = "now-" if event.vod is None else f"0-{stream.duration:.3f}"
        body = build_sdp(media, self.factory.rng.getrandbits(32), getattr(host, "host", "0.0.0.0"), npt)
        if not self.closed:
            self.core.respond(event.request, 200, [("Content-Type", "application/sdp")], body)

    def _packetizer(self, tracks: StreamTracks, track: int, ssrc: int) -> Packetizer | AudioPacketizer:
        rng = self.factory.rng
        if track == AUDIO_TRACK:
            audio = tracks.audio
            if audio is None:
                raise RtspError(404, "the stream has no audio track")
            if audio.codec is Codec.AAC:
                return AacPacketizer(ssrc, rng, audio.sample_rate)
            return G711Packetizer(ssrc, rng, audio.codec)
        assert tracks.video is not None
        if tracks.video.codec is Codec.H265:
            return H265Packetizer(ssrc, rng, PAYLOAD_TYPE)
        return H264Packetizer(ssrc, rng, PAYLOAD_TYPE)

    async def _setup(self, event: Setup) -> None:
        stream, tracks = await self._open(event.channel_id, event.vod)
        if self.closed:
            return
        ssrc = self.factory.rng.getrandbits(32)
        packetizer = self._packetizer(tracks, event.track, ssrc)
        viewer = self.viewer
        if viewer is not None and viewer.stream is not stream:
            self._stop("the stream was replaced")
            viewer = None
        wanted = event.transport
        if viewer is not None and wanted.tcp:
            for n, other in viewer.tracks.items():
                if n != event.track and other.transport.tcp and set(other.transport.interleaved) & set(wanted.interleaved):
                    raise RtspError(461, f"interleaved channels {wanted.interleaved} are taken by track {n}")
        if wanted.tcp:
            track = _Track(event.request.uri, packetizer,
                           Transport(tcp=True, interleaved=wanted.interleaved, ssrc=ssrc))
        else:
            assert wanted.client_port is not None
            rtp, rtcp = _RtcpIgnorer(), _RtcpIgnorer()
            ports = [self.factory.listen_udp(0, rtp), self.factory.listen_udp(0, rtcp)]
            server_port = (ports[0].getHost().port, ports[1].getHost().port)
            track = _Track(event.request.uri, packetizer,
                           Transport(tcp=False, client_port=wanted.client_port, server_port=server_port, ssrc=ssrc))
            track.ports, track.rtp, track.rtcp = ports, rtp, rtcp
            peer = self._tcp.getPeer()
            track.dest = (peer.host, wanted.client_port[0])
        if viewer is None:
            viewer = self.viewer = _Viewer(stream)
        old = viewer.tracks.get(event.track)
        if old is not None:
            old.close()  # a transport change (§10.4)
        viewer.tracks[event.track] = track
        sender = viewer.sender if viewer.vod is None else viewer.vod.sender
        if sender is not None:
            sender.add_track(packetizer, self._emitter(track))
            self._register_producer(viewer)
        self.core.accept_setup(event, track.transport, self.factory.reactor.seconds())

    def _play(self, event: Play) -> None:
        viewer = self.viewer
        if viewer is None or not viewer.tracks:
            raise RtspError(455, "PLAY before SETUP")
        dispatcher = viewer.stream.dispatcher
        cache = dispatcher.cache.frames
        # rtptime names one instant on every track's clock (RFC 2326 §12.33): the
        # cached GOP's first frame, which is sent first. With the GOP cache off the
        # first frame sent is the next keyframe, not known yet: the latest one is
        # the closest known instant (the first packet comes up to a GOP after it).
        start = cache[0] if cache else dispatcher.keyframe
        first_pts = start.pts if start is not None else 0
        rtp_info = ",".join(
            f"url={t.uri};seq={t.packetizer.sequence};rtptime={t.packetizer.rtp_timestamp(first_pts)}"
            for _, t in sorted(viewer.tracks.items())
        )
        self.core.accept_play(event, rtp_info)
        if viewer.sender is not None:
            return  # already playing: PLAY again only re-answers
        self._flush()  # the 200 must reach the client before the first RTP packet
        sender: RtpSender | None = None
        for _, track in sorted(viewer.tracks.items()):
            if sender is None:
                sender = RtpSender(track.packetizer, self._emitter(track))
            else:
                sender.add_track(track.packetizer, self._emitter(track))
        assert sender is not None
        viewer.sender = sender
        self._register_producer(viewer)

        def stream_closed(_: Any) -> None:
            log.info("RTSP: the stream of %s ended; closing the viewer", self.core.session and self.core.session.channel_id)
            self._stream_closed = None
            self._stop("stream ended")
            if not self.closed:
                self._tcp.loseConnection()

        self._stream_closed = stream_closed
        viewer.stream.on_closed.append(stream_closed)
        # Optional on a source: the platform's notes the viewer in the stream's start timeline.
        viewer_started = getattr(self.factory.source, "viewer_started", None)
        if viewer_started is not None:
            peer = self._tcp.getPeer()
            sender.on_start = viewer_started(viewer.stream, f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}")
        self.factory.source.attach(viewer.stream, sender)

    def _vod_play(self, event: Play) -> None:
        """PLAY of a recording: seek and/or scale, answer, (re)start the playback."""
        viewer = self.viewer
        if viewer is None or not viewer.tracks:
            raise RtspError(455, "PLAY before SETUP")
        playback = viewer.vod
        if playback is None:
            sender: RtpSender | None = None
            for _, track in sorted(viewer.tracks.items()):
                # VOD never drops: the transport's pause stops reading instead (max_backlog unbounded).
                if sender is None:
                    sender = RtpSender(track.packetizer, self._emitter(track), max_backlog=1 << 62)
                else:
                    sender.add_track(track.packetizer, self._emitter(track))
            assert sender is not None
            playback = viewer.vod = _VodPlayback(self, viewer.stream, sender)
        start = playback.player.play(self.factory.reactor.seconds(), event.range_start, event.scale)
        playback.bye_sent = False
        rtp_info = ",".join(
            f"url={t.uri};seq={t.packetizer.sequence};rtptime={t.packetizer.rtp_timestamp(start.pts)}"
            for _, t in sorted(viewer.tracks.items())
        )
        duration = playback.media.duration
        self.core.accept_play(event, rtp_info, f"npt={start.npt:.3f}-{duration:.3f}", start.scale)
        self._flush()  # the 200 must reach the client before the first RTP packet
        self._register_producer(viewer)
        log.info("RTSP: playing %s from npt %.3f at scale %g", event.session.channel_id, start.npt, start.scale)
        playback.kick()

    def _vod_pause(self, event: Pause) -> None:
        viewer = self.viewer
        if viewer is None or viewer.vod is None:
            raise RtspError(455, "PAUSE before PLAY")
        npt = viewer.vod.player.pause()
        viewer.vod.kick()
        self.core.accept_pause(event, npt)

    def _send_bye(self) -> None:
        """An RTCP SR + BYE on every track's RTCP channel (RFC 3550 §6.6): the range has ended."""
        viewer = self.viewer
        if viewer is None or viewer.vod is None:
            return
        now = self.factory.reactor.seconds()
        out_pts = viewer.vod.player.next_pts
        for track in viewer.tracks.values():
            p = track.packetizer
            packet = rtcp_sr_bye(p.ssrc, now, p.rtp_timestamp(out_pts), p.packets_sent, p.octets_sent)
            if track.transport.tcp:
                if not self.closed:
                    self._tcp.write(interleave(track.transport.interleaved[1], packet))
            elif track.rtcp is not None and track.rtcp.transport is not None and track.dest is not None:
                udp: Any = track.rtcp.transport
                assert track.transport.client_port is not None
                udp.write(packet, (track.dest[0], track.transport.client_port[1]))

    def _register_producer(self, viewer: _Viewer) -> None:
        if not self._producing and any(t.transport.tcp for t in viewer.tracks.values()):
            self._tcp.registerProducer(self, True)
            self._producing = True

    def _emitter(self, track: _Track) -> Callable[[bytes], None]:
        if track.transport.tcp:
            channel = track.transport.interleaved[0]

            def write_tcp(packet: bytes) -> None:
                if not self.closed:
                    self._tcp.write(interleave(channel, packet))

            return write_tcp
        rtp, dest = track.rtp, track.dest
        assert rtp is not None and dest is not None

        def write_udp(packet: bytes) -> None:
            if rtp.transport is not None:
                udp: Any = rtp.transport
                udp.write(packet, dest)

        return write_udp

    def _stop(self, reason: str) -> None:
        viewer, self.viewer = self.viewer, None
        if viewer is None:
            return
        if viewer.vod is not None:
            viewer.vod.stop()
            log.info("RTSP recording playback stopped (%s): %d frames sent", reason, viewer.vod.player.frames_sent)
        if viewer.sender is not None:
            self.factory.source.detach(viewer.stream, viewer.sender)
            log.info("RTSP viewer detached (%s): %d frames sent, %d dropped", reason,
                     viewer.sender.frames_sent, viewer.sender.frames_dropped)
        if self._stream_closed is not None and self._stream_closed in viewer.stream.on_closed:
            viewer.stream.on_closed.remove(self._stream_closed)
        self._stream_closed = None
        if self._producing and not self.closed:
            self._tcp.unregisterProducer()
        self._producing = False
        for track in viewer.tracks.values():
            track.close()


class _TracksWatch:
    """A dispatcher sink that wakes a DESCRIBE once ``ready()`` holds, or after a timeout.

    The dispatcher updates its tracks before fanning a frame out, so the
    frame that completes them is the one that wakes us. The wake-up is
    scheduled (``callLater(0)``) rather than run inside the dispatcher's
    fan-out, so the other sinks get the frame first. It sits on the
    dispatcher directly, not through the source's viewer bookkeeping; while
    it waits the stream counts one more sink, as a viewer is on its way.
    """

    def __init__(self, dispatcher: FrameDispatcher, ready: Callable[[], bool], reactor: Any) -> None:
        self.dispatcher = dispatcher
        self.ready = ready
        self.reactor = reactor
        self.done: defer.Deferred[bool] = defer.Deferred()
        self._timer: Any = None

    def input_frame(self, frame: Any) -> None:
        if self.ready():
            self.dispatcher.remove_sink(self)
            self.reactor.callLater(0, self._finish, True)

    def _finish(self, ready: bool) -> None:
        self.dispatcher.remove_sink(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self.done.called:
            self.done.callback(ready)

    async def wait(self, timeout: float) -> bool:
        """True once ready, False when ``timeout`` seconds pass first."""
        self.dispatcher.add_sink(self, replay=False)
        self._timer = self.reactor.callLater(timeout, self._finish, False)
        try:
            return await self.done
        finally:
            self.dispatcher.remove_sink(self)
            if self._timer.active():
                self._timer.cancel()


class RtspFactory(protocol.Factory):
    """``reactor.listenTCP(port, RtspFactory(...))``; ``listen_udp(port, proto)`` opens UDP sockets."""

    noisy = False

    def __init__(
        self, source: StreamSource, *, reactor: Any, token: str, rng: random.Random,
        listen_udp: ListenUdp | None = None, keyframe_timeout: float = KEYFRAME_TIMEOUT,
        vod: VodSource | None = None, playback: PlaybackCheck | None = None,
    ) -> None:
        self.source = source
        self.playback = playback  # (token, "live" | "vod", channel) -> valid, on every request
        self.vod = vod
        self.reactor = reactor
        self.token = token
        self.rng = rng
        self.keyframe_timeout = keyframe_timeout
        self.listen_udp: ListenUdp = listen_udp or (lambda port, proto: reactor.listenUDP(port, proto))

    def buildProtocol(self, addr: Any) -> RtspProtocol:  # noqa: N802 - Twisted's name
        return RtspProtocol(self)
