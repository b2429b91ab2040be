"""G.711 to AAC, for outputs whose containers cannot carry G.711 (HLS's MPEG-TS, MP4).

GB/T 28181-2016 §6.1.2 makes G.711 the cameras' audio codec, but neither
MPEG-TS for HLS (RFC 8216 §3.2 lists AAC, MP3, AC-3, E-AC-3) nor browsers'
MSE play it. ``G711ToAac`` decodes A-law/µ-law with FFmpeg's
``pcm_alaw``/``pcm_mulaw`` (ITU-T G.711) and encodes AAC LC with FFmpeg's
native ``aac`` encoder at 16 kHz mono: G.711 holds nothing above 4 kHz, and
16 kHz (rather than 8 kHz) is the lowest rate every browser decoder takes.
PyAV's encoder resamples s16/8 kHz to fltp/16 kHz and re-blocks to the
encoder's 1024-sample frames on its own.

Timestamps: the input is taken as a continuous run of samples; the sample
count, not each block's PTS, stamps the output, so PES jitter does not
become audio jitter. Output PTS = PTS of the first input block + position
of the AAC frame in that run (90 kHz; the encoder's 1024-sample priming
frame comes out just before it). A block whose PTS is more than
``RESYNC_TICKS`` away from where the run says it should be (lost packets, a
camera clock reset, the 33-bit wrap being fine) ends the run: the encoder is
drained and a new run starts at that block.

Cost: about 5 ms of CPU per second of audio (0.5 % of one core; measured
over 60 s of 40 ms blocks with PyAV 18 / FFmpeg 7), so one transcoder per
stream is cheap. Output frames carry a 7-byte ADTS header so they are
self-describing like AAC from a program stream. PyAV is imported when the
first transcoder opens its codecs, not with this module (it costs about
17 MiB of RSS).
"""

from __future__ import annotations

import fractions
import logging
from typing import TYPE_CHECKING, Any

from media.aac import AOT_AAC_LC, adts_header, sample_rate_index
from media.frame import Codec, Frame

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

__all__ = ["AAC_CHANNELS", "AAC_SAMPLE_RATE", "RESYNC_TICKS", "G711ToAac", "TranscodeError"]

CLOCK_RATE = 90_000  # PES timestamps, ISO/IEC 13818-1 §2.4.3.7
G711_RATE = 8000  # ITU-T G.711: 8 kHz, one octet per sample
AAC_SAMPLE_RATE = 16000
AAC_CHANNELS = 1
AUDIO_STREAM_ID = 0xC0  # first audio PES stream_id (ISO/IEC 13818-1 Table 2-22)
RESYNC_TICKS = CLOCK_RATE // 5  # 200 ms
_PTS_MASK = (1 << 33) - 1
_DECODERS = {Codec.G711A: "pcm_alaw", Codec.G711U: "pcm_mulaw"}
_RATE_INDEX = sample_rate_index(AAC_SAMPLE_RATE)


class TranscodeError(ValueError):
    """FFmpeg refused to decode or encode a block."""


class G711ToAac:
    """One stream's G.711 blocks in, ADTS AAC frames out (see the module docstring)."""

    def __init__(self, codec: Codec, *, bitrate: int = 32000) -> None:
        if codec not in _DECODERS:
            raise ValueError(f"{codec.value} is not G.711")
        if bitrate <= 0:
            raise ValueError(f"bitrate must be positive, not {bitrate}")
        self.codec = codec
        self.bitrate = bitrate
        self.frames_in = 0
        self.frames_out = 0
        self.resyncs = 0
        self._decoder: av.AudioCodecContext | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._base = 0  # 90 kHz PTS of the run's first sample
        self._samples = 0  # 8 kHz samples fed in this run

    def feed(self, frame: Frame) -> list[Frame]:
        """The AAC frames that ``frame``'s samples complete; often none (1024-sample frames)."""
        if frame.codec is not self.codec:
            raise ValueError(f"G711ToAac({self.codec.value}) cannot take {frame.codec.value}")
        if not frame.data:
            return []
        out: list[Frame] = []
        if self._encoder is not None:
            expected = (self._base + self._samples * CLOCK_RATE // G711_RATE) & _PTS_MASK
            drift = (frame.pts - expected) & _PTS_MASK
            if min(drift, _PTS_MASK + 1 - drift) > RESYNC_TICKS:
                self.resyncs += 1
                log.info("G.711->AAC: PTS %d is %d ticks off the sample clock; starting a new run",
                         frame.pts, drift if drift <= _PTS_MASK // 2 else drift - _PTS_MASK - 1)
                out = self.flush()
        if self._encoder is None:
            self._open(frame.pts)
        assert self._decoder is not None and self._encoder is not None
        import av  # loaded by _open already: a dictionary lookup

        self.frames_in += 1
        try:
            for pcm in self._decoder.decode(av.Packet(frame.data)):
                pcm.pts = self._samples
                pcm.time_base = fractions.Fraction(1, G711_RATE)
                self._samples += pcm.samples
                out.extend(self._packets(self._encoder.encode(pcm)))
        except av.error.FFmpegError as e:
            raise TranscodeError(f"G.711->AAC failed on a {len(frame.data)}-byte block: {e}") from e
        return out

    def flush(self) -> list[Frame]:
        """Drain the encoder: the AAC frames still buffered. The next ``feed`` starts a new run."""
        encoder, self._encoder, self._decoder = self._encoder, None, None
        if encoder is None:
            return []
        import av

        try:
            return self._packets(encoder.encode(None))
        except av.error.FFmpegError as e:
            raise TranscodeError(f"draining the AAC encoder failed: {e}") from e

    def _open(self, pts: int) -> None:
        import av

        decoder = av.CodecContext.create(_DECODERS[self.codec], "r")
        assert isinstance(decoder, av.AudioCodecContext)
        decoder.sample_rate = G711_RATE
        decoder.layout = "mono"
        encoder = av.CodecContext.create("aac", "w")
        assert isinstance(encoder, av.AudioCodecContext)
        encoder.sample_rate = AAC_SAMPLE_RATE
        encoder.layout = "mono"
        encoder.format = "fltp"
        encoder.bit_rate = self.bitrate
        encoder.time_base = fractions.Fraction(1, AAC_SAMPLE_RATE)
        try:
            encoder.open()
        except av.error.FFmpegError as e:
            raise TranscodeError(f"cannot open FFmpeg's aac encoder: {e}") from e
        self._decoder, self._encoder = decoder, encoder
        self._base, self._samples = pts, 0

    def _packets(self, packets: list[Any]) -> list[Frame]:
        out = []
        for packet in packets:
            size = packet.size
            if not size:
                continue
            position = packet.pts if packet.pts is not None else 0  # 1/16000 s since the run began
            pts = (self._base + position * CLOCK_RATE // AAC_SAMPLE_RATE) & _PTS_MASK
            data = b"".join((adts_header(AOT_AAC_LC, _RATE_INDEX, AAC_CHANNELS, size), packet))
            out.append(Frame(Codec.AAC, data, pts, pts, True, AUDIO_STREAM_ID))
        self.frames_out += len(out)
        return out
