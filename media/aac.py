"""AAC framing helpers: ADTS headers and the AudioSpecificConfig (ISO/IEC 14496-3).

GB/T 28181 cameras that send AAC carry it in the program stream as ADTS
(stream_type 0x0F, ISO/IEC 13818-7 / 14496-3 §1.A.2): every frame starts with
a 7-byte header (9 with a CRC) that names the object type, sampling rate and
channels, and one PES payload may hold several frames. The outputs need the
same facts in other shapes: RTP (RFC 3640) and FLV (§E.4.2.2) want raw frames
without the header plus an AudioSpecificConfig (§1.6.2.1) sent once; MPEG-TS
takes ADTS as it is. ``G711ToAac`` goes the other way and builds headers.

``split_adts`` returns memoryviews into the caller's bytes: the payload is
never copied here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADTS_HEADER_SIZE",
    "AOT_AAC_LC",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATES",
    "AdtsError",
    "AdtsHeader",
    "adts_header",
    "audio_specific_config",
    "parse_adts_header",
    "sample_rate_index",
    "split_adts",
]

ADTS_HEADER_SIZE = 7  # protection_absent = 1; 9 with the CRC
AOT_AAC_LC = 2  # ISO/IEC 14496-3 Table 1.1, audioObjectType 2 = AAC LC
SAMPLES_PER_FRAME = 1024  # one raw_data_block: 1024 samples per channel (§4.5.2.1)
# ISO/IEC 14496-3 Table 1.18, samplingFrequencyIndex 0..12.
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_MAX_FRAME = 0x1FFF  # aac_frame_length is 13 bits


class AdtsError(ValueError):
    """Bytes that are not a run of whole ADTS frames."""


@dataclass(frozen=True, slots=True)
class AdtsHeader:
    """The fields of adts_fixed_header/adts_variable_header the outputs need (§1.A.2.2)."""

    object_type: int  # audioObjectType = profile + 1 (1 Main, 2 LC, 3 SSR, 4 LTP)
    sample_rate_index: int
    channels: int  # channel_configuration; 0 means "in a program_config_element"
    header_size: int  # 7, or 9 with crc_check
    frame_length: int  # header + raw data, bytes
    raw_blocks: int  # number_of_raw_data_blocks_in_frame + 1

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATES[self.sample_rate_index]

    def config(self) -> bytes:
        """The AudioSpecificConfig describing frames with this header."""
        return audio_specific_config(self.object_type, self.sample_rate_index, self.channels)


def parse_adts_header(data: bytes | memoryview, offset: int = 0) -> AdtsHeader:
    """The ADTS header at ``offset`` (ISO/IEC 14496-3 §1.A.2.2.1); raises ``AdtsError``."""
    if len(data) - offset < ADTS_HEADER_SIZE:
        raise AdtsError(f"{len(data) - offset} bytes are too short for an ADTS header")
    b1, b2, b3, b4, b5, b6 = data[offset + 1 : offset + 7]
    if data[offset] != 0xFF or b1 & 0xF6 != 0xF0:  # syncword 0xFFF, layer 00
        raise AdtsError(f"no ADTS syncword at offset {offset}")
    index = (b2 >> 2) & 0x0F
    if index >= len(SAMPLE_RATES):
        raise AdtsError(f"reserved sampling_frequency_index {index}")
    header_size = ADTS_HEADER_SIZE if b1 & 0x01 else ADTS_HEADER_SIZE + 2
    length = ((b3 & 0x03) << 11) | (b4 << 3) | (b5 >> 5)
    if length <= header_size:
        raise AdtsError(f"aac_frame_length {length} leaves no room for data")
    return AdtsHeader(
        object_type=(b2 >> 6) + 1,
        sample_rate_index=index,
        channels=((b2 & 0x01) << 2) | (b3 >> 6),
        header_size=header_size,
        frame_length=length,
        raw_blocks=(b6 & 0x03) + 1,
    )


def split_adts(data: bytes | memoryview) -> list[tuple[AdtsHeader, memoryview]]:
    """Each ADTS frame's header and raw_data_block, as views into ``data``.

    Raises ``AdtsError`` when ``data`` is not a run of whole frames, or holds
    a frame of several raw_data_blocks: without a CRC their boundaries are not
    coded (§1.A.2.2.2), so neither RTP (RFC 3640) nor FLV could carry them.
    """
    view = memoryview(data)
    out: list[tuple[AdtsHeader, memoryview]] = []
    pos = 0
    while pos < len(view):
        header = parse_adts_header(view, pos)
        end = pos + header.frame_length
        if end > len(view):
            raise AdtsError(f"ADTS frame of {header.frame_length} bytes truncated to {len(view) - pos}")
        if header.raw_blocks != 1:
            raise AdtsError(f"ADTS frame holds {header.raw_blocks} raw_data_blocks")
        out.append((header, view[pos + header.header_size : end]))
        pos = end
    return out


def sample_rate_index(rate: int) -> int:
    """samplingFrequencyIndex of ``rate`` (Table 1.18); ValueError if it has none."""
    try:
        return SAMPLE_RATES.index(rate)
    except ValueError:
        raise ValueError(f"{rate} Hz has no AAC samplingFrequencyIndex") from None


def audio_specific_config(object_type: int, sample_rate_index: int, channels: int) -> bytes:
    """AudioSpecificConfig (§1.6.2.1) with a GASpecificConfig of zero flags (§4.4.1).

    5 bits audioObjectType, 4 bits samplingFrequencyIndex, 4 bits
    channelConfiguration, then frameLengthFlag (1024 samples),
    dependsOnCoreCoder and extensionFlag, all 0: two bytes.
    """
    if not 1 <= object_type <= 30 or not 0 <= sample_rate_index <= 12 or not 0 <= channels <= 7:
        raise ValueError(f"no AudioSpecificConfig for {object_type}/{sample_rate_index}/{channels}")
    return (object_type << 11 | sample_rate_index << 7 | channels << 3).to_bytes(2, "big")


def adts_header(object_type: int, sample_rate_index: int, channels: int, payload_size: int) -> bytes:
    """A 7-byte ADTS header (no CRC) for one raw_data_block of ``payload_size`` bytes.

    MPEG-4 ID (0), layer 00, adts_buffer_fullness 0x7FF (variable rate),
    one raw_data_block (§1.A.2.2.1). ``object_type`` must be 1..4: the
    2-bit profile field holds object type minus one.
    """
    length = payload_size + ADTS_HEADER_SIZE
    if length > _MAX_FRAME:
        raise ValueError(f"{payload_size}-byte AAC frame does not fit aac_frame_length")
    if not 1 <= object_type <= 4 or not 0 <= sample_rate_index <= 12 or not 0 <= channels <= 7:
        raise ValueError(f"no ADTS header for {object_type}/{sample_rate_index}/{channels}")
    return bytes((
        0xFF,
        0xF1,  # syncword low bits, ID 0 (MPEG-4), layer 00, protection_absent 1
        (object_type - 1) << 6 | sample_rate_index << 2 | channels >> 2,
        (channels & 3) << 6 | length >> 11,
        (length >> 3) & 0xFF,
        (length & 7) << 5 | 0x1F,  # buffer fullness 0x7FF, high 5 bits
        0xFC,  # buffer fullness low 6 bits, number_of_raw_data_blocks_in_frame 0
    ))
