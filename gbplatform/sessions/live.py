"""Live streams: INVITE a channel, receive its PS/RTP, hand frames to the outputs.

GB/T 28181-2016 §9.2 (real-time media): the platform sends INVITE with an
SDP offer naming where it receives (``c=``/``m=``), the SSRC it expects
(``y=``), and for TCP who connects (``a=setup``); the device answers 200 with
its SDP, the platform ACKs and RTP starts. BYE from either side ends it.

One ``LiveStream`` per channel, shared by every viewer: a second viewer
asking while the INVITE is in flight waits for the same answer (two viewers
never cause two INVITEs). Every way a stream ends — our BYE, the device's
BYE, an error answer, a timeout, no RTP for ``no_rtp_timeout`` seconds —
goes through ``_close``, which stops the receiver and returns the port lease
and the SSRC exactly once, then runs the stream's ``on_closed`` callbacks
(HTTP-FLV viewers finish their responses there).

The INVITE's final answer is awaited for ``invite_timeout`` seconds, not SIP
timer B (32 s). A play that gives up on it (that timeout, or a stop while it
is in flight) fails at once, it and every viewer waiting for it, and the
INVITE is ended whatever the device does next: CANCEL once a provisional
answer has come (RFC 3261 §9.1 forbids one before), ACK and BYE for a 2xx
that arrives anyway (§13.2.2.4, §15).

Idle teardown: a stream nobody watches costs the device's uplink and a port
pair, so once it has had no sink for ``idle_timeout`` seconds it is stopped
(BYE). Viewers attach through ``attach``/``detach``, which keep the stream's
``idle_since``; one timer per stream re-checks at the deadline. Sinks that
other code adds to the dispatcher directly also count: the check looks at
``dispatcher.sinks`` itself, and restarts the countdown when it finds one
gone without a ``detach``. A stream started through the API and never
watched times out the same way.

Start timeline: each stream keeps when its INVITE went out, when the 200 OK
came, when the first RTP packet arrived (``RtpIngest.stats``) and when the
first video keyframe was assembled, and for its latest ``TIMELINE_VIEWERS``
HTTP-FLV and RTSP viewers when each attached and when its first media left
(``viewer_started``): ``GET /api/v1/streams`` shows them (``timeline``) so an
operator can tell a slow device from a slow platform or a slow player. The
keyframe is seen by a shim between the ingest and the dispatcher that takes
itself out of the path once it has seen one, so it costs nothing per frame
afterwards.

A device that starts its stream mid-GOP (many keep their encoder's GOP
running rather than opening with an IDR) makes every first viewer wait up to
a GOP (2-4 s) for a keyframe. When the first video frame is not a keyframe,
``request_keyframe`` (the control service's ``IFameCmd``, GB/T 28181-2016
§A.2.3.1) asks the channel for one at once, once per stream; a device that
does not answer is logged, and the next keyframe comes when it comes.

Known tracks: the outputs announce the stream's tracks (RTSP's SDP, the FLV
header's audio flag) once ``tracks_known``: the dispatcher's ``StreamTracks``
are ready (a keyframe, and audio seen or 0.5 s of video without it), or
sooner, at the first keyframe, when the stream says no audio will come: the
PS stream's map (PSM, ISO/IEC 13818-1 §2.5.4; GB/T 28181-2016 Annex C) lists
no audio elementary stream, or the device sends the bare video elementary
stream (RFC 6184/7798 payload: its answer has one video ``m=`` line and no
audio, RFC 3264 §6). Most GB/T 28181 cameras send video only, and without
this every first viewer waited the 0.5 s probe (issue 12: time to first frame).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, NamedTuple, cast

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.core.errors import DeviceOffline, DeviceRejected, DeviceTimeout, DomainError
from gbplatform.core.ids import SsrcAllocator
from gbplatform.sessions.shapes import (
    AudioCodec,
    Stream,
    StreamState,
    StreamTimeline,
    StreamTransport,
    VideoCodec,
    ViewerOutput,
    ViewerStart,
)
from gbplatform.signalling.router import SipRouter, SipTimeout
from media.frame import Frame
from media.ingest import RtpIngest, payload_formats_from_rtpmap
from media.nal import sps_info
from media.pipeline import GOP_CACHE_BYTES, FrameDispatcher, FrameSink, GopCache
from media.ports import PortLease, PortPool, PortsExhausted, SharedPortPool
from media.ps import STREAM_TYPES
from sip import sdp
from sip.dialog import Dialog
from sip.endpoint import Addr
from sip.message import Request, Response, make_response
from sip.transaction import ServerTransaction

log = Logger()

SDP_TYPE = "Application/SDP"
MEDIA_MODES = {"UDP": "udp", "TCP-PASSIVE": "tcp-passive", "TCP-ACTIVE": "tcp-active"}


# Viewers' starts kept per stream for its timeline (GET /api/v1/streams).
TIMELINE_VIEWERS = 16


def _ms(epoch: float | None) -> int | None:
    return None if epoch is None else round(epoch * 1000)


@dataclass
class _ViewerStart:
    output: ViewerOutput
    peer: str
    attached: float  # clock.time()
    first_frame: float | None = None


@dataclass
class Timeline:
    """When a stream's start steps happened: epoch seconds (``clock.time()``), None until they do.

    ``first_keyframe`` is on the reactor clock (``clock.seconds()``, what the
    receivers stamp frames with), like ``RtpIngest.stats.first_packet_at``.
    """

    invite_sent: float | None = None
    answered: float | None = None
    first_keyframe: float | None = None
    viewers: deque[_ViewerStart] = field(default_factory=lambda: deque(maxlen=TIMELINE_VIEWERS))


class _FirstKeyframe:
    """Between the ingest and the dispatcher until the first video keyframe: stamps it, then steps aside.

    The ingest calls ``dispatcher.input_frame(frame, now)``; once this has
    seen a keyframe it puts the real dispatcher back on the ingest, so later
    frames go straight there.
    """

    def __init__(self, ingest: RtpIngest, dispatcher: FrameDispatcher, timeline: Timeline,
                 mid_gop: Callable[[], None] | None = None) -> None:
        self.ingest = ingest
        self.dispatcher = dispatcher
        self.timeline = timeline
        self.mid_gop = mid_gop  # told once when video starts with a frame that is not a keyframe

    def input_frame(self, frame: Frame, now: float = 0.0) -> None:
        if frame.codec.is_video and self.timeline.first_keyframe is None:
            if frame.keyframe:
                self.timeline.first_keyframe = now
                self.ingest.dispatcher = self.dispatcher
            elif self.mid_gop is not None:
                mid_gop, self.mid_gop = self.mid_gop, None
                mid_gop()
        self.dispatcher.input_frame(frame, now)


# A device's media settings: its transport, or (transport, stream choice),
# or (transport, stream choice, whether its offer may carry y=).
MediaProfile = str | tuple[str, str | None] | tuple[str, str | None, bool]


class NoPorts(DomainError):
    """The RTP port range is exhausted (API: 503)."""

    status = 503
    code = "no_media_ports"


class MediaConnectFailed(DomainError):
    """tcp-active: the device accepted the INVITE but refused (or never took) our media connection (API: 502)."""

    status = 502
    code = "media_connect_failed"


class StreamStopped(DomainError):
    """The stream was stopped while its INVITE was in flight (API: 409)."""

    status = 409
    code = "stream_stopped"


@dataclass
class _Invite:
    """Our INVITE until its final answer.

    ``outcome`` is what ``_invite`` awaits: the final response, or the reason
    the play gave up on it (``invite_timeout``, a stop). Once ``abandoned``,
    whatever the device still answers is ended: a 1xx gets a CANCEL (RFC 3261
    §9.1 allows one only after a provisional), a 2xx an ACK and a BYE
    (§13.2.2.4, §15).
    """

    request: Request
    dest: Addr
    outcome: Deferred[Response] = field(default_factory=Deferred)
    provisional: bool = False
    abandoned: bool = False
    cancelled: bool = False
    timer: DelayedCallLike | None = None


class MediaInfo(NamedTuple):
    video_codec: VideoCodec | None
    width: int | None
    height: int | None
    audio_codec: AudioCodec | None


@dataclass
class LiveStream:
    device_id: str
    channel_id: str
    ssrc: str
    lease: PortLease
    mode: str
    dispatcher: FrameDispatcher
    ingest: RtpIngest
    receiver: Any
    started_at: float
    state: StreamState = "inviting"  # inviting -> playing -> closed | failed
    error: str | None = None
    dialog: Dialog | None = None
    dest: Addr | None = None
    answer: sdp.SessionDescription | None = None
    ready: Deferred[LiveStream] = field(default_factory=Deferred)
    waiters: list[Deferred[LiveStream]] = field(default_factory=list)
    on_closed: list[Callable[[LiveStream], None]] = field(default_factory=list)
    idle_since: float | None = None  # clock.seconds() when the last viewer left; None while watched
    idle_timer: DelayedCallLike | None = None
    stream_choice: str | None = None  # the device's main/sub choice, e.g. "streamnumber:1"
    sdp_y_line: bool = True  # False: the device's SDP parser rejects y= (osip2 5.x)
    invite: _Invite | None = None  # while the INVITE awaits its final answer
    timeline: Timeline = field(default_factory=Timeline)
    _info: MediaInfo = field(default_factory=lambda: MediaInfo(None, None, None, None), repr=False)
    _info_key: Frame | None = field(default=None, repr=False)

    @property
    def viewers(self) -> int:
        return len(self.dispatcher.sinks)

    def tracks_known(self) -> bool:
        """Whether the outputs may announce the tracks now (see "Known tracks" in the module docstring)."""
        tracks = self.dispatcher.tracks
        if tracks.video is None:
            return False
        return tracks.ready or not self._audio_may_come()

    def _audio_may_come(self) -> bool:
        """False when the PSM lists no audio, or the device sends bare video (RFC 6184/7798) and no PS."""
        ingest = self.ingest
        # Read defensively: the demuxer may be a compiled one with the same sans-IO face.
        types: dict[int, int] | None = getattr(getattr(ingest, "demuxer", None), "stream_types", None)
        if types:
            return any(not codec.is_video for codec in map(STREAM_TYPES.get, types.values()) if codec is not None)
        # No PSM seen: bare elementary-stream video carries no audio; a PS stream without a PSM might.
        return not getattr(ingest, "depacketizers", None)

    def media_info(self) -> MediaInfo:
        """Codecs and picture size, read from the latest keyframe's SPS (memoised per keyframe)."""
        tracks = self.dispatcher.tracks
        key = tracks.video.keyframe if tracks.video is not None else None
        audio_track = tracks.audio
        audio = cast(AudioCodec, audio_track.codec.value) if audio_track is not None else None
        if key is not None and (key is not self._info_key or audio != self._info.audio_codec):
            info = sps_info(key.codec, key.data)
            self._info = MediaInfo(cast(VideoCodec, key.codec.value), info.width if info else None,
                                   info.height if info else None, audio)
            self._info_key = key
        return self._info

    def info(self, clock: Clock) -> Stream:
        """The stream's state and health (GB/T 28181-2016 §9.2 session, RFC 3550 §6.4.1 loss/jitter)."""
        stats = self.ingest.stats
        reorder = self.ingest.reorder.stats
        figures = self.dispatcher.stats
        media = self.media_info()
        now = clock.seconds()  # the receivers stamp frames with reactor time
        return Stream(
            device_id=self.device_id,
            channel_id=self.channel_id,
            state=self.state,
            error=self.error,
            ssrc=self.ssrc,
            transport=cast(StreamTransport, self.mode),
            rtp_port=self.lease.rtp,
            started_at=self.started_at,
            packets=stats.packets,
            bytes=stats.bytes,
            frames=stats.frames,
            rtp_lost=reorder.lost,
            jitter_seconds=reorder.jitter_seconds,
            foreign_ssrc=stats.foreign_ssrc,
            gop=figures.last_gop,
            video_codec=media.video_codec,
            audio_codec=media.audio_codec,
            width=media.width,
            height=media.height,
            fps=round(figures.fps(now), 2),
            bitrate_bps=int(figures.bitrate(now)),
            uptime_seconds=round(max(clock.time() - self.started_at, 0.0), 3),
            viewers=self.viewers,
            timeline=self.timeline_info(clock),
        )

    def timeline_info(self, clock: Clock) -> StreamTimeline:
        """The start steps in epoch milliseconds (reactor-clock stamps moved onto the wall clock)."""
        t = self.timeline
        offset = clock.time() - clock.seconds()
        first_rtp = self.ingest.stats.first_packet_at
        return StreamTimeline(
            invite_sent_ms=_ms(t.invite_sent if t.invite_sent is not None else self.started_at) or 0,
            answered_ms=_ms(t.answered),
            first_rtp_ms=_ms(None if first_rtp is None else first_rtp + offset),
            first_keyframe_ms=_ms(None if t.first_keyframe is None else t.first_keyframe + offset),
            viewers=[ViewerStart(output=v.output, peer=v.peer, attached_ms=_ms(v.attached) or 0,
                                 first_frame_ms=_ms(v.first_frame)) for v in t.viewers],
        )


class LiveStreams:
    """Starts, shares and ends live streams (the INVITE side of GB/T 28181-2016 §9.2)."""

    def __init__(
        self,
        *,
        router: SipRouter,
        clock: Clock,
        ports: PortPool,
        ssrcs: SsrcAllocator,
        receiver_factory: Callable[..., Any],
        media_ip: str,
        media_mode: Callable[[str], Awaitable[MediaProfile] | MediaProfile] = lambda device_id: "UDP",
        invite_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        gop_cache_bytes: int = GOP_CACHE_BYTES,
        gop_cache_idle: float = 0.0,
        request_keyframe: Callable[[str], Awaitable[object]] | None = None,
        rng: random.Random | None = None,
        ingest_factory: Callable[..., RtpIngest] = RtpIngest,
    ) -> None:
        self.router = router
        # A stream's ingest: RtpIngest, or media workers' RemoteIngest (gbplatform/sessions/media_workers.py).
        self.ingest_factory = ingest_factory
        self.clock = clock
        self.ports = ports
        self.ssrcs = ssrcs
        self.receiver_factory = receiver_factory
        self.media_ip = media_ip
        self.media_mode = media_mode
        self.invite_timeout = invite_timeout
        self.idle_timeout = idle_timeout
        self.gop_cache_bytes = gop_cache_bytes  # 0: no GOP cache, viewers start at the next keyframe
        # Seconds unwatched before a stream's cache keeps its keyframe alone (media/pipeline.py); 0: never.
        self.gop_cache_idle = gop_cache_idle
        self.request_keyframe = request_keyframe  # channel -> the device's answer (IFameCmd)
        self.rng = rng or random.Random()
        self.streams: dict[str, LiveStream] = {}
        # Told (stream, "started" | "ended" | "failed", reason) as streams start and end: the event bus.
        self.observers: list[Callable[[LiveStream, str, str | None], None]] = []

    def _notify(self, stream: LiveStream, what: str, reason: str | None) -> None:
        for observer in tuple(self.observers):
            try:
                observer(stream, what, reason)
            except Exception:  # noqa: BLE001 - an observer's bug must not break the stream; logged
                log.failure("stream observer {observer!r} failed on {id} {what}", observer=observer,
                            id=stream.channel_id, what=what)

    def get(self, channel_id: str) -> LiveStream | None:
        return self.streams.get(channel_id)

    async def play(self, device_id: str, channel_id: str) -> LiveStream:
        """The channel's stream, INVITEing the device if nobody is watching it yet."""
        stream = self.streams.get(channel_id)
        if stream is not None and stream.state in ("inviting", "playing"):
            if stream.state == "playing":
                return stream
            waiter: Deferred[LiveStream] = Deferred()
            stream.waiters.append(waiter)
            return await waiter
        dest = self.router.devices.address_of(device_id)
        if dest is None:
            raise DeviceOffline(f"device {device_id} is not registered")
        profile = self.media_mode(device_id)
        if not isinstance(profile, (str, tuple)):
            profile = await profile
        mode, stream_choice, y_line = (profile, None, True) if isinstance(profile, str) else (*profile, True)[:3]
        stream = self.streams.get(channel_id)  # another viewer may have started it meanwhile
        if stream is not None and stream.state in ("inviting", "playing"):
            return await self.play(device_id, channel_id)
        stream = self._open(device_id, channel_id, mode)
        stream.dest = dest
        stream.stream_choice = stream_choice
        stream.sdp_y_line = bool(y_line)
        try:
            await self._invite(stream, dest)
        except Exception as e:
            message = e.message if isinstance(e, DomainError) else str(e)
            self._close(stream, "failed", message)
            for waiter in stream.waiters:
                waiter.errback(e)
            stream.waiters.clear()
            raise
        for waiter in stream.waiters:
            waiter.callback(stream)
        stream.waiters.clear()
        return stream

    def _open(self, device_id: str, channel_id: str, transport: str) -> LiveStream:
        mode = MEDIA_MODES.get(transport, "udp")
        ssrc = self.ssrcs.allocate(history=False)
        dispatcher = FrameDispatcher(GopCache(max_bytes=self.gop_cache_bytes),
                                     idle_after=self.gop_cache_idle or None)
        ingest = self.ingest_factory(dispatcher, ssrc=int(ssrc))
        opened: list[LiveStream] = []  # the no-RTP callback needs the stream made below
        try:
            lease, receiver = self._bind(channel_id, ingest, mode, lambda reason: self._no_rtp(opened[0], reason))
        except BaseException:
            self.ssrcs.release(ssrc)
            raise
        stream = LiveStream(
            device_id=device_id, channel_id=channel_id, ssrc=ssrc, lease=lease, mode=mode,
            dispatcher=dispatcher, ingest=ingest, receiver=receiver, started_at=self.clock.time(),
        )
        ingest.dispatcher = cast(FrameDispatcher, _FirstKeyframe(
            ingest, dispatcher, stream.timeline, partial(self._mid_gop, stream)))
        opened.append(stream)
        self.streams[channel_id] = stream
        stream.idle_since = self.clock.seconds()
        stream.idle_timer = self.clock.call_later(self.idle_timeout, self._idle_check, stream)
        return stream

    def _bind(
        self, channel_id: str, ingest: RtpIngest, mode: str, on_timeout: Callable[[str], None]
    ) -> tuple[PortLease, Any]:
        """A port pair and its started receiver, skipping pairs another program holds.

        A configured range may overlap the kernel's ephemeral ports (Linux
        32768-60999) or another media server's, so a bind can fail with
        EADDRINUSE for a port the pool thinks free. Such a pair is logged and
        given back behind the others (the program may let it go), and the
        next free one is tried; only when every free pair fails is the play
        refused.
        """
        taken: list[PortLease] = []
        try:
            while True:
                try:
                    lease = self.ports.lease(channel_id)
                except PortsExhausted as e:
                    if taken:
                        ports = ", ".join(str(t.rtp) for t in taken)
                        raise NoPorts(f"every free RTP port pair is taken by another program ({ports})") from None
                    raise NoPorts(str(e)) from None
                try:
                    receiver = self.receiver_factory(ingest, lease, mode=mode, on_timeout=on_timeout)
                    receiver.start()
                except CannotListenError as e:
                    log.warn("RTP port {port} (or {rtcp}) for {id} is taken by another program: {error}; "
                             "trying the next pair", port=lease.rtp, rtcp=lease.rtcp, id=channel_id,
                             error=str(e.socketError))
                    taken.append(lease)
                    continue
                except BaseException:
                    self.ports.release(lease)
                    raise
                return lease, receiver
        finally:
            for lease in taken:
                self.ports.release(lease)

    async def _invite(self, stream: LiveStream, dest: Addr) -> None:
        tcp = {"tcp-passive": "passive", "tcp-active": "active"}.get(stream.mode)
        offer = sdp.build_gb_offer(
            device_id=self.router.platform_id, channel_id=stream.channel_id, ip=self.media_ip,
            port=stream.lease.rtp, ssrc=stream.ssrc, tcp=tcp, stream_index=self._stream_index(stream),
        )
        if not stream.sdp_y_line:
            # GB/T 28181-2016 Annex F wants y=, but osip2 5.x's SDP parser
            # rejects the unknown line and such firmware never answers: leave
            # it out, and take the SSRC from the answer or the first packet.
            offer = replace(offer, ssrc=None, media=[replace(m, ssrc=None) for m in offer.media])
        req: Request = self.router.new_request(
            "INVITE", stream.channel_id, dest, body=offer.serialize(), content_type=SDP_TYPE
        )
        # GB/T 28181-2016 §9.2.2.1: Subject "<channel>:<ssrc>,<platform>:0".
        req.headers.add("Subject", f"{stream.channel_id}:{stream.ssrc},{self.router.platform_id}:0")
        invite = _Invite(req, dest)
        stream.invite = invite
        answer = self.router.send_request(req, dest, on_provisional=lambda _: self._provisional(stream, invite))
        stream.timeline.invite_sent = self.clock.time()
        answer.addCallbacks(self._final_answer, self._no_final_answer, callbackArgs=(stream, invite),
                            errbackArgs=(stream, invite))
        # Timer B (32 s) is far too long for a viewer, and longer than the
        # no-RTP watchdog: media.invite_timeout bounds the wait.
        invite.timer = self.clock.call_later(self.invite_timeout, self._invite_expired, stream, invite)
        try:
            resp = await invite.outcome
        except SipTimeout:
            raise DeviceTimeout(f"device did not answer the INVITE for {stream.channel_id}") from None
        finally:
            if invite.timer is not None and invite.timer.active():
                invite.timer.cancel()
            invite.timer = None
            stream.invite = None
        if resp.status >= 300:
            raise DeviceRejected(f"device answered the INVITE for {stream.channel_id} with {resp.status} {resp.reason}")
        stream.dialog = Dialog.from_uac(req, resp)
        # The device's BYE (and INFO/NOTIFY) in this dialog come to us (RFC 3261 §12.2.2).
        self.router.add_dialog(stream.dialog.id, partial(self.in_dialog_request, stream))
        ack = stream.dialog.ack_for(req.cseq[0])
        self.router.endpoint.send_stateless(ack, dest)
        self.router.flush()
        try:
            stream.answer = sdp.parse(resp.body)
        except sdp.SdpError as e:
            raise DeviceRejected(f"device's SDP answer is unusable: {e}") from None
        answered = stream.answer.effective_ssrc
        if answered and answered.isdigit() and int(answered) != int(stream.ssrc):
            log.info("channel {id} answered SSRC {got}, offered {want}: following it",
                     id=stream.channel_id, got=answered, want=stream.ssrc)
            stream.ingest.rekey(int(answered))
        elif not answered and not stream.sdp_y_line:
            if isinstance(self.ports, SharedPortPool):
                # The single port routes by SSRC: without one in the answer the
                # offered one (named in the Subject header) is all there is.
                log.warn("channel {id}: no y= offered or answered; on the single RTP port the device must "
                         "send SSRC {ssrc}", id=stream.channel_id, ssrc=stream.ssrc)
            else:
                stream.ingest.ssrc = None  # the first RTP packet's SSRC is the stream's
        video = stream.answer.first_media("video")
        formats = payload_formats_from_rtpmap(video.rtpmap()) if video is not None else {}
        if formats:  # PS, or raw H264/H265 (RFC 6184/7798) by the answer's payload types
            stream.ingest.set_payload_formats(formats)
        if stream.mode == "tcp-active":
            media = stream.answer.first_media("video")
            host = stream.answer.media_ip(media) if media is not None else None
            if media is None or not host:
                raise DeviceRejected("device's SDP answer has no address to connect to")
            try:
                await stream.receiver.connect(host, media.port)
            except Exception as e:  # noqa: BLE001 - refused, unreachable, timed out: all mean no media
                if stream.state != "inviting" or isinstance(e, CancelledError):
                    raise StreamStopped(f"channel {stream.channel_id} was stopped while connecting") from None
                # _close (through play) ends the call the device accepted with a BYE.
                raise MediaConnectFailed(
                    f"cannot connect to the device's media address {host}:{media.port}: {e}"
                ) from None
        if stream.state != "inviting":
            raise StreamStopped(f"channel {stream.channel_id} was stopped while its INVITE was in flight")
        stream.state = "playing"
        log.info("channel {id} of {dev} playing ({mode}, port {port})", id=stream.channel_id,
                 dev=stream.device_id, mode=stream.mode, port=stream.lease.rtp)
        self._notify(stream, "started", None)

    def _provisional(self, stream: LiveStream, invite: _Invite) -> None:
        invite.provisional = True
        if invite.abandoned:
            self._cancel(stream, invite)

    def _final_answer(self, resp: Response, stream: LiveStream, invite: _Invite) -> None:
        if not invite.abandoned:
            stream.timeline.answered = self.clock.time()
            invite.outcome.callback(resp)
            return
        if not 200 <= resp.status < 300:
            log.info("channel {id}: the given-up INVITE was answered {status} {reason}", id=stream.channel_id,
                     status=resp.status, reason=resp.reason)
            return
        # RFC 3261 §13.2.2.4: every 2xx is ACKed, even for a call we no
        # longer want; then the dialog it made is ended with BYE (§15).
        log.info("channel {id}: the device accepted the given-up INVITE; ending the call", id=stream.channel_id)
        try:
            dialog = Dialog.from_uac(invite.request, resp)
            self.router.endpoint.send_stateless(dialog.ack_for(invite.request.cseq[0]), invite.dest)
            self.router.flush()
            bye = self.router.send_request(dialog.new_request("BYE"), invite.dest)
        except Exception:  # noqa: BLE001 - a broken late 2xx must not reach the reactor
            log.failure("channel {id}: cannot end the call of a late 2xx", id=stream.channel_id)
            return
        bye.addErrback(lambda f: log.info("BYE to {id} not answered: {e}", id=stream.channel_id, e=f.value))

    def _no_final_answer(self, failure: Failure, stream: LiveStream, invite: _Invite) -> None:
        if not invite.abandoned:
            invite.outcome.errback(failure)
            return
        log.info("channel {id}: the given-up INVITE ended without an answer: {e}", id=stream.channel_id,
                 e=failure.getErrorMessage())

    def _invite_expired(self, stream: LiveStream, invite: _Invite) -> None:
        invite.timer = None
        if invite.outcome.called:
            return
        log.warn("channel {id}: no final answer to the INVITE in {timeout} s; giving up", id=stream.channel_id,
                 timeout=self.invite_timeout)
        self._abandon(stream, invite, DeviceTimeout(
            f"device did not answer the INVITE for {stream.channel_id} in {self.invite_timeout:g} s"))

    def _abandon(self, stream: LiveStream, invite: _Invite, error: Exception) -> None:
        """Give up on the INVITE: fail the play with ``error`` and end whatever the device still answers."""
        invite.abandoned = True
        if invite.provisional:
            self._cancel(stream, invite)
        if not invite.outcome.called:
            invite.outcome.errback(error)

    def _cancel(self, stream: LiveStream, invite: _Invite) -> None:
        if invite.cancelled:
            return
        invite.cancelled = True
        log.info("channel {id}: cancelling the INVITE", id=stream.channel_id)
        d = self.router.send_request(cancel_for(invite.request), invite.dest)
        d.addErrback(lambda f: log.info("CANCEL to {id} not answered: {e}", id=stream.channel_id, e=f.value))

    @staticmethod
    def _stream_index(stream: LiveStream) -> tuple[str, int] | None:
        """The device's main/sub choice as an SDP attribute; a bad stored value is logged, not offered."""
        if not stream.stream_choice:
            return None
        try:
            return sdp.parse_stream_choice(stream.stream_choice)
        except sdp.SdpError as e:
            log.warn("channel {id}: ignoring stream choice {choice!r}: {e}", id=stream.channel_id,
                     choice=stream.stream_choice, e=str(e))
            return None

    def stop(self, channel_id: str, reason: str = "stopped") -> bool:
        stream = self.streams.get(channel_id)
        if stream is None:
            return False
        self._close(stream, "closed", reason)
        return True

    def attach(self, stream: LiveStream, sink: FrameSink) -> None:
        """Add a viewer: it gets the GOP cache first, and the stream is no longer idle."""
        stream.dispatcher.add_sink(sink)
        if sink in stream.dispatcher.sinks:
            stream.idle_since = None

    def _mid_gop(self, stream: LiveStream) -> None:
        """The stream began mid-GOP: ask the channel for a keyframe now instead of waiting out the GOP."""
        if self.request_keyframe is None or stream.state not in ("inviting", "playing"):
            return
        log.info("channel {id}: the stream starts mid-GOP; asking for a keyframe (IFameCmd)", id=stream.channel_id)
        d = ensureDeferred(_awaited(self.request_keyframe(stream.channel_id)))
        d.addErrback(lambda f: log.info("channel {id}: the keyframe request failed: {e}", id=stream.channel_id,
                                        e=f.getErrorMessage()))

    def viewer_started(self, stream: LiveStream, output: ViewerOutput, peer: str) -> Callable[[], None]:
        """Note a viewer in the stream's timeline; the output calls what this returns at its first media."""
        start = _ViewerStart(output, peer, self.clock.time())
        stream.timeline.viewers.append(start)

        def first_frame() -> None:
            if start.first_frame is None:
                start.first_frame = self.clock.time()

        return first_frame

    def detach(self, stream: LiveStream, sink: FrameSink) -> None:
        """Remove a viewer; the last one leaving starts the idle countdown."""
        stream.dispatcher.remove_sink(sink)
        if not stream.dispatcher.sinks and stream.idle_since is None:
            stream.idle_since = self.clock.seconds()

    def _idle_check(self, stream: LiveStream) -> None:
        stream.idle_timer = None
        if stream.state not in ("inviting", "playing"):
            return
        now = self.clock.seconds()
        if stream.dispatcher.sinks:
            stream.idle_since = None
        elif stream.idle_since is None:
            # A sink went away without detach (the dispatcher drops failing
            # sinks itself): count from now.
            stream.idle_since = now
        elif stream.state == "playing" and now - stream.idle_since >= self.idle_timeout:
            log.info("channel {id}: no viewer for {s} s; ending the stream", id=stream.channel_id,
                     s=self.idle_timeout)
            self._close(stream, "closed", f"no viewer for {self.idle_timeout:g} s")
            return
        start = stream.idle_since if stream.idle_since is not None else now
        delay = max(start + self.idle_timeout - now, 0.0) or self.idle_timeout
        stream.idle_timer = self.clock.call_later(delay, self._idle_check, stream)

    def in_dialog_request(self, stream: LiveStream, req: Request, tx: ServerTransaction, source: Addr) -> None:
        """A BYE (or INFO, NOTIFY) the router matched to ``stream``'s dialog (RFC 3261 §12.2.2)."""
        assert stream.dialog is not None
        status = stream.dialog.receive_request(req)
        self.router.respond(tx, make_response(req, status or 200))
        if req.method == "BYE" and status is None:
            log.info("channel {id}: the device ended the stream (BYE)", id=stream.channel_id)
            self._close(stream, "closed", "device sent BYE", send_bye=False)

    def _no_rtp(self, stream: LiveStream, reason: str) -> None:
        log.warn("channel {id}: {reason}; ending the stream", id=stream.channel_id, reason=reason)
        self._close(stream, "failed", reason)

    def _close(self, stream: LiveStream, state: Literal["closed", "failed"], reason: str, *,
               send_bye: bool = True) -> None:
        if stream.state in ("closed", "failed"):
            return
        was_playing = stream.state == "playing"
        stream.state = state
        stream.error = None if state == "closed" else reason
        invite, stream.invite = stream.invite, None
        if send_bye and stream.dialog is not None and stream.dest is not None and not stream.dialog.terminated:
            bye = stream.dialog.new_request("BYE")
            d = self.router.send_request(bye, stream.dest)
            d.addErrback(lambda f: log.info("BYE to {id} not answered: {e}", id=stream.channel_id, e=f.value))
        if stream.receiver is not None:
            d2 = ensureDeferred(_maybe_deferred(stream.receiver.stop()))
            d2.addErrback(lambda f: log.failure("stopping the receiver of {id} failed", f, id=stream.channel_id))
            # The pair goes back to the pool once its sockets are closed (a media worker closes
            # them a moment later): the next play then never meets its own stream's old socket.
            d2.addBoth(lambda _: self.ports.release(stream.lease))
        else:
            self.ports.release(stream.lease)
        self.ssrcs.release(stream.ssrc)
        if self.streams.get(stream.channel_id) is stream:
            del self.streams[stream.channel_id]
        if stream.dialog is not None:
            self.router.remove_dialog(stream.dialog.id)
        if stream.idle_timer is not None:
            if stream.idle_timer.active():
                stream.idle_timer.cancel()
            stream.idle_timer = None
        callbacks, stream.on_closed = stream.on_closed, []
        for callback in callbacks:
            try:
                callback(stream)
            except Exception:  # noqa: BLE001 - one broken viewer must not keep the others open
                log.failure("on_closed callback of {id} failed", id=stream.channel_id)
        # A stream that never played is a play that failed; one that played has ended.
        self._notify(stream, "ended" if was_playing else "failed", reason)
        if invite is not None and not invite.outcome.called:
            # Ended before the device answered: play() and its waiters fail
            # now instead of getting a closed stream when the answer comes.
            error: Exception = (
                StreamStopped(f"channel {stream.channel_id} was stopped while its INVITE was in flight ({reason})")
                if state == "closed"
                else DeviceTimeout(f"channel {stream.channel_id}: {reason} before the device answered the INVITE")
            )
            self._abandon(stream, invite, error)


def cancel_for(invite: Request) -> Request:
    """CANCEL of a pending INVITE (RFC 3261 §9.1).

    Request-URI, Call-ID, From, To and the CSeq number are the INVITE's, the
    one Via is the INVITE's top Via (same branch, so it matches the server
    transaction), and Route headers are copied; the method is CANCEL.
    """
    cancel = Request(method="CANCEL", uri=invite.uri)
    cancel.headers.add("Via", invite.headers.get_all("Via")[0])
    for value in invite.headers.get_all("Route"):
        cancel.headers.add("Route", value)
    for name in ("From", "To", "Call-ID"):
        cancel.headers.add(name, invite.headers.get(name) or "")
    cancel.headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
    cancel.headers.add("Max-Forwards", "70")
    return cancel


async def _awaited(awaitable: Awaitable[object]) -> object:
    return await awaitable


async def _maybe_deferred(value: Any) -> Any:
    if isinstance(value, Deferred):
        return await value
    return value
