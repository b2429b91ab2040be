"""Playing a recorded time range over RTSP: seek, pause, speed (RFC 2326 §10.5, §10.6, §12.29, §12.34), sans-IO.

Theory of operation
-------------------
A recording is a list of GOPs, each starting with a keyframe, each with its
start in *npt* seconds (normal play time, RFC 2326 §3.6): npt 0 is the
range's first keyframe, and missing footage between segments is skipped, so
npt runs over footage only. ``VodPlayer`` does not read anything: it asks
for GOPs by index (``loads()``), is handed their frames (``gop_loaded``,
frames stamped in npt at 90 kHz) and hands out the frames that are due
(``poll(now)``). The adapter reads GOPs in a worker thread and calls
``poll`` on the reactor clock at ``next_deadline()``.

* **Read-ahead** is bounded: at most ``read_ahead`` GOPs are buffered or
  being read, one read at a time. A client that reads slowly (TCP
  backpressure) makes the adapter stop polling; nothing drains, so nothing
  more is read: back-pressure instead of drops, as befits VOD.
* **Pacing**: the first frame after PLAY is due at once; frame ``f`` is due
  ``(f.dts - anchor) / scale`` after it. A frame later than ``max_late``
  (a stalled client, a slow disk or S3 read) moves the anchor instead of
  bursting to catch up.
* **Output timestamps** (the RTP timestamps the packetizers derive from
  ``Frame.pts``) follow the delivery clock: one session-long timeline that
  only moves forward, across seeks and speed changes, advancing by
  ``npt delta / scale``. A player thus plays whatever it receives at its
  normal rate, and Scale 2 looks twice as fast. The PLAY answer's RTP-Info
  (§12.33) names the output timestamp of the first frame, and its Range the
  npt of that frame, which is how a player maps one onto the other.
* **Seek** (``Range: npt=t-``) starts at the GOP whose keyframe is at or
  before ``t``; the buffer is dropped and reads in flight are ignored
  (``generation``).
* **Scale** (§12.34): ``MIN_SCALE``..``MAX_SCALE`` forward (clamped;
  reverse play is answered with Scale 1). Audio is sent at Scale 1 only.
  Above ``KEYFRAMES_ONLY_ABOVE`` (4) only the keyframes are sent, so the
  network carries about a keyframe per GOP-duration / scale instead of
  ``scale`` times the bit rate; up to 4 every video frame is sent, faster.
* **End**: when every GOP has been sent the player is ``ended``; the
  adapter sends an RTCP BYE (``rtcp_sr_bye``; RFC 3550 §6.6) per track and
  keeps the session until TEARDOWN, where a PLAY with a Range seeks again.
"""

from __future__ import annotations

import bisect
import struct
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from media.frame import Frame
from media.pipeline import AudioTrack

__all__ = [
    "KEYFRAMES_ONLY_ABOVE",
    "MAX_SCALE",
    "MIN_SCALE",
    "PlayStart",
    "VodMedia",
    "VodPlayer",
    "rtcp_sr_bye",
]

CLOCK = 90_000  # Frame pts/dts ticks per second
MIN_SCALE = 0.25
MAX_SCALE = 16.0
KEYFRAMES_ONLY_ABOVE = 4.0
READ_AHEAD = 3  # GOPs buffered or being read
MAX_LATE = 1.0  # seconds behind schedule before the schedule moves instead
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix), RFC 5905 §6


class VodMedia(Protocol):
    """A recorded range as the RTSP adapter sees it (``gbplatform.recording.rtsp_vod`` builds it).

    ``video`` is the first keyframe (its parameter sets go in the SDP),
    ``gops`` the npt start of each GOP, ascending, ``duration`` the npt end.
    ``load(i)`` resolves to GOP ``i``'s frames in decoding order, stamped in
    npt ticks; it runs its I/O off the caller's thread.
    """

    @property
    def video(self) -> Frame: ...

    @property
    def audio(self) -> AudioTrack | None: ...

    @property
    def gops(self) -> Sequence[float]: ...

    @property
    def duration(self) -> float: ...

    def load(self, index: int) -> Awaitable[list[Frame]]: ...


@dataclass(frozen=True)
class PlayStart:
    """What a PLAY answer says: the npt it starts at, the Scale used, the first output timestamp."""

    npt: float
    scale: float
    pts: int


def clamp_scale(scale: float | None, current: float) -> float:
    """The Scale we play (§12.34 lets the server pick): forward, within MIN..MAX_SCALE."""
    if scale is None:
        return current
    if scale < 0:
        return 1.0  # reverse play is not offered: play forward at normal speed
    return min(max(scale, MIN_SCALE), MAX_SCALE)


class VodPlayer:
    """See the module docstring."""

    def __init__(self, gops: Sequence[float], duration: float, *, read_ahead: int = READ_AHEAD,
                 max_late: float = MAX_LATE, has_audio: bool = True) -> None:
        if not gops:
            raise ValueError("a recording without GOPs cannot play")
        self.gops = list(gops)
        self.duration = duration
        self.read_ahead = read_ahead
        self.max_late = max_late
        self.has_audio = has_audio
        self.scale = 1.0
        self.playing = False
        self.generation = 0
        self.frames_sent = 0
        self._next_load = 0  # the next GOP index to read
        self._loading: int | None = None  # the GOP being read (of this generation)
        self._frames: deque[tuple[Frame, int]] = deque()  # (frame, its GOP index), GOPs consecutive
        self._next_queue = 0  # the GOP index expected from the next read
        self._position = 0.0  # npt of the next frame to send (or the seek target)
        # Delivery clock: output ticks and the wall-clock second they map to.
        self._out_next = 0  # the next output tick: past the last frame sent, by one frame interval
        self._last_video_out: int | None = None
        self._anchor_npt: int | None = None  # npt tick of the anchor frame (set by the first frame)
        self._anchor_out = 0
        self._anchor_wall = 0.0

    # -- requests -------------------------------------------------------------------
    @property
    def position(self) -> float:
        """The npt of the next frame to send, in seconds."""
        if self._frames:
            return self._frames[0][0].dts / CLOCK
        return self._position

    @property
    def ended(self) -> bool:
        """Every GOP of the range has been sent."""
        return self._next_queue >= len(self.gops) and not self._frames

    def seek_index(self, npt: float) -> int:
        """The GOP whose keyframe is at or before ``npt`` (the first GOP for earlier times)."""
        return max(0, bisect.bisect_right(self.gops, npt) - 1)

    @property
    def next_pts(self) -> int:
        """The output timestamp the next frame sent will have at the earliest (RTCP SR, RTP-Info)."""
        return self._out_next

    @property
    def buffered_gops(self) -> int:
        return self._frames[-1][1] - self._frames[0][1] + 1 if self._frames else 0

    def play(self, now: float, start: float | None = None, scale: float | None = None) -> PlayStart:
        """PLAY: seek to ``start`` if given, else resume (at the end: nothing left to
        send until a Range seeks back); take ``scale``; re-anchor the clock."""
        new_scale = clamp_scale(scale, self.scale)
        if new_scale != self.scale:
            self.scale = new_scale
            self._frames = deque(item for item in self._frames if self._keep(item[0]))
        if start is not None:
            self._seek(self.seek_index(start))
        self.playing = True
        self._anchor_npt = None  # the next frame sent anchors the clock at `now` or later
        self._anchor_out = self._out_next
        self._anchor_wall = now
        return PlayStart(self.position, self.scale, self._out_next)

    def pause(self) -> float:
        """PAUSE: stop sending; the buffer stays. Returns the npt to resume from."""
        self.playing = False
        return self.position

    def _seek(self, index: int) -> None:
        self.generation += 1
        self._frames.clear()
        self._loading = None
        self._next_load = self._next_queue = index
        self._position = self.gops[index]

    # -- reading ----------------------------------------------------------------------
    def loads(self) -> list[int]:
        """GOP indices to read now: one at a time, ``read_ahead`` GOPs ahead at most."""
        if self._loading is not None or self._next_load >= len(self.gops):
            return []
        if self.buffered_gops >= self.read_ahead:
            return []
        self._loading = self._next_load
        self._next_load += 1
        return [self._loading]

    def gop_loaded(self, index: int, generation: int, frames: list[Frame]) -> None:
        """GOP ``index``'s frames (read for ``generation``; older reads are dropped)."""
        if generation != self.generation or index != self._loading:
            return
        self._loading = None
        self._next_queue = index + 1
        self._frames.extend((f, index) for f in frames if self._keep(f))

    def _keep(self, frame: Frame) -> bool:
        """Worth sending at the current scale: audio at 1 only, only keyframes above 4."""
        if self.scale == 1.0:
            return True
        if not frame.codec.is_video:
            return False
        return frame.keyframe or self.scale <= KEYFRAMES_ONLY_ABOVE

    # -- sending ----------------------------------------------------------------------
    def _due(self, frame: Frame) -> float:
        assert self._anchor_npt is not None
        return self._anchor_wall + (frame.dts - self._anchor_npt) / CLOCK / self.scale

    def next_deadline(self) -> float | None:
        """When ``poll`` has a frame to give; None while paused, ended or waiting for a read."""
        if not self.playing or not self._frames:
            return None
        if self._anchor_npt is None:
            return self._anchor_wall
        return self._due(self._frames[0][0])

    def poll(self, now: float) -> list[Frame]:
        """The frames due by ``now``, restamped on the delivery clock (see the module docstring)."""
        out: list[Frame] = []
        if not self.playing:
            return out
        while self._frames:
            frame, _ = self._frames[0]
            if self._anchor_npt is None:
                self._anchor_npt = frame.dts
                self._anchor_wall = max(self._anchor_wall, now)
            due = self._due(frame)
            if due > now:
                break
            if not out and now - due > self.max_late:
                # Behind by more than max_late (stalled client, slow read): move the schedule.
                self._anchor_wall += now - due
            self._frames.popleft()
            self._position = frame.dts / CLOCK
            if frame.dts < self._anchor_npt and not frame.codec.is_video:
                continue  # audio muxed just before the keyframe we start at
            dts = self._anchor_out + round((frame.dts - self._anchor_npt) / self.scale)
            pts = dts + round((frame.pts - frame.dts) / self.scale)
            step = 1
            if frame.codec.is_video:
                if self._last_video_out is not None and dts > self._last_video_out:
                    step = dts - self._last_video_out  # the next frame after a seek keeps the spacing
                self._last_video_out = dts
            self._out_next = max(self._out_next, dts + step)
            out.append(replace(frame, pts=pts, dts=dts))
        self.frames_sent += len(out)
        return out


def rtcp_sr_bye(ssrc: int, now: float, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    """A compound RTCP packet: an SR without report blocks, then a BYE (RFC 3550 §6.4.1, §6.6).

    §6.1: every compound packet starts with an SR or RR. ``now`` is Unix
    time, written as the 64-bit NTP timestamp.
    """
    ntp = now + NTP_EPOCH_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFF_FFFF
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, seconds & 0xFFFF_FFFF, fraction,
                     rtp_timestamp & 0xFFFF_FFFF, packets & 0xFFFF_FFFF, octets & 0xFFFF_FFFF)
    bye = struct.pack("!BBHI", 0x81, 203, 1, ssrc)
    return sr + bye
