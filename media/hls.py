"""HTTP Live Streaming output: a sliding window of MPEG-TS segments.

Theory of operation: ``HlsSegmenter`` is a ``FrameSink``. Video access units
(Annex B, 90 kHz PTS/DTS) collect into a pending segment; a segment is cut
on a video keyframe once at least ``target_duration`` seconds of video have
accumulated (RFC 8216 §3: each segment after the first should start with an
IDR so a client can join at any segment). Audio never cuts a segment. Each
finished segment is muxed to an MPEG-TS byte string (ISO/IEC 13818-1;
RFC 8216 §3.2) and kept in memory; only the last ``window`` segments are
kept, and the media sequence number (RFC 8216 §4.3.3.2) counts the ones
dropped from the front.

Audio: MPEG-TS for HLS carries AAC (RFC 8216 §3.2, ADTS in PES), not G.711.
AAC from the camera (ADTS, as the program stream has it) goes in as it is;
G.711 goes through one ``G711ToAac`` per segmenter, so per stream, not per
viewer (about 5 ms of CPU per second of audio). Audio joins the pending
segment only (none before the first keyframe). A segment whose tracks
differ from the one before (audio appearing, a codec change) is marked
``EXT-X-DISCONTINUITY`` (RFC 8216 §4.3.2.3) and the discontinuity sequence
(§4.3.3.3) counts those that left the window.

Muxing uses PyAV's ``add_mux_stream``: a stream with codec parameters but no
codec context, so no encoder (libx264) is ever opened; the access units are
muxed as raw packets with their own timestamps. PyAV is imported when the
first segment is muxed, not with this module (it costs about 17 MiB of RSS). Timestamps are kept as the
device sent them so they run on across segments (RFC 8216 §3: a client
relies on continuous timestamps between segments of one rendition).

Memory is bounded: ``window`` segments plus one pending segment, which is
dropped (and the segmenter waits for the next keyframe) if it outgrows
``max_segment_bytes`` or ``max_segment_frames`` video frames; audio past
twice that many frames in one segment is dropped.
"""

from __future__ import annotations

import io
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from media.aac import AdtsError
from media.avmux import CLOCK_RATE, MUXER_CODECS, TIME_BASE, av_packet
from media.frame import Codec, Frame
from media.nal import sps_info
from media.pipeline import AudioTrack, audio_track
from media.transcode import G711ToAac, TranscodeError

log = logging.getLogger(__name__)

__all__ = ["HLS_TYPE", "TS_TYPE", "HlsError", "HlsSegment", "HlsSegmenter", "mux_ts"]

HLS_TYPE = b"application/vnd.apple.mpegurl"  # the playlist's media type, RFC 8216 §4
TS_TYPE = b"video/mp2t"  # an MPEG-2 TS segment's (RFC 8216 §3.2)

_PTS_MASK = (1 << 33) - 1


class HlsError(ValueError):
    """A segment could not be muxed to MPEG-TS."""


@dataclass(frozen=True, slots=True)
class HlsSegment:
    """One media segment (RFC 8216 §3): ``sequence`` is its media sequence number."""

    sequence: int
    duration: float
    data: bytes
    discontinuity: bool = False  # EXT-X-DISCONTINUITY before it (RFC 8216 §4.3.2.3)


def mux_ts(frames: list[Frame], *, width: int = 0, height: int = 0, audio: AudioTrack | None = None) -> bytes:
    """The MPEG-TS (ISO/IEC 13818-1 §2.4) of video access units and AAC, muxed without an encoder.

    All video frames must share one codec, and the first frame should be a
    keyframe carrying its parameter sets in-band (RFC 8216 §3.2: a TS segment
    must be decodable on its own given its parameter sets). Audio frames
    must be AAC in ADTS; ``audio`` declares the audio stream (so a segment
    that happens to hold no audio frame still has one); without it the
    first AAC frame's header does.
    """
    if not frames:
        raise HlsError("a segment needs at least one frame")
    import av

    codec = frames[0].codec
    name = MUXER_CODECS.get(codec)
    if name is None:
        raise HlsError(f"cannot mux {codec.value} into an HLS video segment")
    if audio is None:
        first_aac = next((f for f in frames if f.codec is Codec.AAC), None)
        if first_aac is not None:
            try:
                audio = audio_track(first_aac)
            except AdtsError as e:
                raise HlsError(f"AAC frame without an ADTS header: {e}") from e
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="mpegts") as container:
            video = container.add_mux_stream(name, width=width, height=height)
            video.time_base = TIME_BASE
            sound = None
            if audio is not None:
                sound = container.add_mux_stream("aac", rate=audio.sample_rate)
                sound.time_base = TIME_BASE
            for frame in frames:
                if frame.codec is codec:
                    stream = video
                elif frame.codec is Codec.AAC and sound is not None:
                    stream = sound
                elif frame.codec.is_video:
                    raise HlsError(f"one segment mixes {codec.value} and {frame.codec.value}")
                else:
                    raise HlsError(f"cannot mux {frame.codec.value} audio into MPEG-TS; "
                                   "it needs AAC (G711ToAac)")
                container.mux(av_packet(frame, stream))
    except av.error.FFmpegError as e:
        log.warning("hls: the mpegts muxer refused a %s segment of %d frames: %s", codec.value, len(frames), e)
        raise HlsError(f"MPEG-TS muxing failed: {e}") from e
    return buf.getvalue()


class HlsSegmenter:
    """A live HLS rendition of one stream: video plus AAC audio, playlist and segments (RFC 8216)."""

    def __init__(self, *, target_duration: float = 2.0, window: int = 6,
                 max_segment_bytes: int = 32 * 1024 * 1024, max_segment_frames: int = 1500,
                 audio: bool = True, audio_bitrate: int = 32000) -> None:
        if target_duration <= 0:
            raise ValueError(f"target_duration must be positive, not {target_duration}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.target_duration = target_duration
        self.window = window
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_frames = max_segment_frames
        self.audio = audio
        self.audio_bitrate = audio_bitrate
        self.segments: deque[HlsSegment] = deque(maxlen=window)
        self.next_sequence = 0
        self.discontinuity_sequence = 0  # EXT-X-DISCONTINUITY-SEQUENCE (RFC 8216 §4.3.3.3)
        self.dropped_frames = 0  # frames lost to overflow, codec change or mux errors
        self.dropped_audio = 0  # audio frames that could not be muxed or transcoded
        self.audio_track: AudioTrack | None = None  # the AAC the segments carry, once seen
        self.transcoder: G711ToAac | None = None
        self._pending: list[Frame] = []
        self._pending_bytes = 0
        self._pending_video = 0
        self._last_video_dts = 0
        self._last_audio_dts: int | None = None
        self._size = (0, 0)
        self._tracks: tuple[Codec, AudioTrack | None] | None = None  # of the last segment

    @property
    def media_sequence(self) -> int:
        """EXT-X-MEDIA-SEQUENCE: the number of the oldest segment in the window (RFC 8216 §4.3.3.2)."""
        return self.segments[0].sequence if self.segments else self.next_sequence

    def input_frame(self, frame: Frame) -> None:
        codec = frame.codec
        if not codec.is_video:
            if self._pending and self.audio:
                self._audio(frame)
            return  # before the first keyframe audio has no segment to join
        if frame.keyframe:
            if self._pending and (codec is not self._pending[0].codec or self._pending_span(frame)):
                self._cut(frame)
            if not self._pending:
                info = sps_info(codec, frame.data)
                if info is not None:
                    self._size = (info.width, info.height)
        elif not self._pending:
            self.dropped_frames += 1
            return  # a segment must start on a keyframe (RFC 8216 §3)
        if self._pending_video >= self.max_segment_frames or self._pending_bytes + len(frame.data) > self.max_segment_bytes:
            log.warning("hls: a segment outgrew %d frames / %d bytes without a keyframe; dropping it",
                        self.max_segment_frames, self.max_segment_bytes)
            self.dropped_frames += len(self._pending) + 1
            self._reset()
            return
        self._pending.append(frame)
        self._pending_bytes += len(frame.data)
        self._pending_video += 1
        self._last_video_dts = frame.dts

    def _audio(self, frame: Frame) -> None:
        if frame.codec is Codec.AAC:
            self._add_aac(frame)
            return
        transcoder = self.transcoder
        if transcoder is None or transcoder.codec is not frame.codec:
            if transcoder is not None:
                self._transcoded(transcoder.flush)
            try:
                transcoder = self.transcoder = G711ToAac(frame.codec, bitrate=self.audio_bitrate)
            except ValueError as e:
                self._drop_audio(f"no AAC for {frame.codec.value}: {e}")
                return
        self._transcoded(lambda: transcoder.feed(frame))

    def _transcoded(self, run: Callable[[], list[Frame]]) -> None:
        try:
            frames = run()
        except TranscodeError as e:
            self._drop_audio(str(e))
            return
        for aac in frames:
            self._add_aac(aac)

    def _add_aac(self, frame: Frame) -> None:
        if self.audio_track is None:
            try:
                self.audio_track = audio_track(frame)
            except AdtsError as e:
                self._drop_audio(f"AAC without an ADTS header: {e}")
                return
        last = self._last_audio_dts
        if last is not None and not 0 < (frame.dts - last) & _PTS_MASK < _PTS_MASK // 2:
            self._drop_audio(f"AAC DTS {frame.dts} does not follow {last}")
            return
        if len(self._pending) >= 2 * self.max_segment_frames or self._pending_bytes + len(frame.data) > self.max_segment_bytes:
            self._drop_audio("the pending segment is full")
            return
        self._last_audio_dts = frame.dts
        self._pending.append(frame)
        self._pending_bytes += len(frame.data)

    def _drop_audio(self, reason: str) -> None:
        self.dropped_audio += 1
        if self.dropped_audio <= 10 or self.dropped_audio % 1000 == 0:
            log.warning("hls: dropping an audio frame (%d so far): %s", self.dropped_audio, reason)

    def _pending_span(self, frame: Frame) -> bool:
        return frame.dts - self._pending[0].dts >= self.target_duration * CLOCK_RATE

    def _cut(self, next_key: Frame) -> None:
        frames = self._pending
        first, last, count = frames[0].dts, self._last_video_dts, self._pending_video
        duration = (next_key.dts - first) / CLOCK_RATE
        if next_key.codec is not frames[0].codec or duration <= 0:
            # No next timestamp to measure by: take the frame spacing instead.
            step = (last - first) / max(count - 1, 1)
            duration = (last - first + step) / CLOCK_RATE
        self._reset()
        tracks = (frames[0].codec, self.audio_track)
        try:
            data = mux_ts(frames, width=self._size[0], height=self._size[1], audio=self.audio_track)
        except HlsError:
            self.dropped_frames += len(frames)
            return  # mux_ts logged why
        discontinuity = self._tracks is not None and tracks != self._tracks
        self._tracks = tracks
        if len(self.segments) == self.window and self.segments[0].discontinuity:
            self.discontinuity_sequence += 1  # its tag leaves the playlist with it (RFC 8216 §6.2.2)
        self.segments.append(HlsSegment(self.next_sequence, max(duration, 0.001), data, discontinuity))
        self.next_sequence += 1

    def _reset(self) -> None:
        self._pending = []
        self._pending_bytes = 0
        self._pending_video = 0
        self._last_audio_dts = None  # DTS must rise within one mux, not across segments

    def segment(self, n: int) -> bytes | None:
        """The bytes of segment ``n`` while it is in the window."""
        for seg in self.segments:
            if seg.sequence == n:
                return seg.data
        return None

    def playlist(self, uri_suffix: str = "") -> str:
        """The live media playlist (RFC 8216 §4.3): no EXT-X-ENDLIST while live (§4.3.3.4).

        ``uri_suffix`` is appended to every segment URI (e.g. ``?token=...``).
        """
        longest = max((s.duration for s in self.segments), default=self.target_duration)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            # §4.3.3.1: the EXTINF durations, rounded to the nearest integer, must
            # not exceed it; the ceiling is always safe.
            f"#EXT-X-TARGETDURATION:{math.ceil(longest)}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
        ]
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        for seg in self.segments:
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXTINF:{seg.duration:.3f},")
            lines.append(f"seg{seg.sequence}.ts{uri_suffix}")
        return "\n".join(lines) + "\n"
