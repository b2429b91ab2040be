"""One recording segment: frames muxed to MPEG-TS by stream copy, indexed as written.

Theory of operation: ``TsRecordMuxer`` owns one PyAV mpegts output whose
streams are mux-only (``add_mux_stream``: codec parameters, no codec
context), so access units pass through untouched (no encoder is ever
opened): the video as Annex B H.264/H.265 (ISO/IEC 13818-1 §2.4 with
stream_type 0x1B/0x24) and the audio as ADTS AAC (ISO/IEC 13818-7 §6.2; the
muxer keeps the ADTS headers, stream_type 0x0F). G.711 is converted to AAC
before it gets here (MPEG-TS has no stream type for G.711).

Every byte the muxer writes passes through a tap that hands it to the output
and to a ``TsIndexer``, so the keyframe index is exactly what is on disk.
FFmpeg's interleaver would otherwise hold video back for up to 10 s waiting
for audio that may never come; ``max_interleave_delta`` bounds that to
``interleave_seconds`` (also the most a crash can lose beyond the I/O
buffer). PAT/PMT are written before every video keyframe (``resend_headers``
on top of the muxer's own rule), which makes every index entry the start of a
self-contained byte range.

Timestamps are written as they came (90 kHz); a frame whose DTS does not
increase on its stream is dropped and counted, since the muxer refuses it.

PyAV is imported when the first muxer starts, not with this module (it
costs about 17 MiB of RSS that a platform which records nothing should not
pay); later imports in ``write`` are a ``sys.modules`` lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from media.avmux import MUXER_CODECS, TIME_BASE, av_packet
from media.frame import Codec, Frame
from media.pipeline import AudioTrack
from media.tsindex import KeyframeEntry, TsIndexer

log = logging.getLogger(__name__)

__all__ = ["MuxError", "TsRecordMuxer"]



class MuxError(RuntimeError):
    """The muxer refused the stream (or the output failed underneath it)."""


class _Tap:
    """The file object PyAV writes to: output plus indexer."""

    def __init__(self, write: Callable[[bytes], object], indexer: TsIndexer) -> None:
        self._write = write
        self._indexer = indexer
        self.size = 0

    def write(self, data: bytes) -> int:
        self._write(data)
        self._indexer.feed(data)
        self.size += len(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class TsRecordMuxer:
    """Stream-copy muxer for one segment; ``write(frame)`` then ``close()``."""

    def __init__(self, write: Callable[[bytes], object], *, video: Codec, width: int = 0, height: int = 0,
                 audio: AudioTrack | None = None, interleave_seconds: float = 0.5) -> None:
        name = MUXER_CODECS.get(video)
        if name is None:
            raise MuxError(f"{video.value} is not a video codec")
        import av

        self.video_codec = video
        self.indexer = TsIndexer()
        self._tap = _Tap(write, self.indexer)
        options = {
            "max_interleave_delta": str(max(1, int(interleave_seconds * 1_000_000))),
            "mpegts_flags": "+resend_headers",
        }
        try:
            self._container = av.open(self._tap, "w", format="mpegts", options=options)
            self._video = self._container.add_mux_stream(name, width=width, height=height)
            self._video.time_base = TIME_BASE
            self._audio = None
            if audio is not None:
                self._audio = self._container.add_mux_stream("aac", rate=audio.sample_rate)
                self._audio.time_base = TIME_BASE
        except av.error.FFmpegError as e:
            raise MuxError(f"cannot start the MPEG-TS muxer: {e}") from e
        self.has_audio = audio is not None
        self.frames = 0
        self.dropped = 0
        self._last_dts = {"v": -(1 << 62), "a": -(1 << 62)}
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes handed to the output so far."""
        return self._tap.size

    @property
    def entries(self) -> list[KeyframeEntry]:
        return self.indexer.entries

    def write(self, frame: Frame) -> bool:
        """Mux one frame; False when it was dropped (wrong codec, DTS not increasing)."""
        if frame.codec.is_video:
            if frame.codec is not self.video_codec:
                self.dropped += 1
                return False
            stream, key = self._video, "v"
        elif frame.codec is Codec.AAC and self._audio is not None:
            stream, key = self._audio, "a"
        else:
            self.dropped += 1
            return False
        if frame.dts <= self._last_dts[key]:
            self.dropped += 1
            return False
        self._last_dts[key] = frame.dts
        import av

        try:
            self._container.mux(av_packet(frame, stream))
        except av.error.FFmpegError as e:
            raise MuxError(f"muxing a {frame.codec.value} frame failed: {e}") from e
        self.frames += 1
        return True

    def close(self) -> None:
        """Flush the interleaver and the I/O buffer (no trailer is needed for TS)."""
        if self._closed:
            return
        self._closed = True
        import av

        try:
            self._container.close()
        except av.error.FFmpegError as e:
            raise MuxError(f"closing the MPEG-TS muxer failed: {e}") from e
