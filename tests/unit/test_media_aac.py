"""ADTS headers and AudioSpecificConfig (ISO/IEC 14496-3 §1.A.2, §1.6.2.1)."""

from __future__ import annotations

import pytest

from media.aac import (
    AdtsError,
    AdtsHeader,
    adts_header,
    audio_specific_config,
    parse_adts_header,
    sample_rate_index,
    split_adts,
)

# The fourth frame of `ffmpeg -f lavfi -i sine -ac 2 -c:a aac -f adts`: 44.1 kHz stereo, 369 bytes.
REAL = bytes.fromhex("fff150802e3ffc")


def test_parse_a_real_header() -> None:
    h = parse_adts_header(REAL + bytes(362))
    assert h == AdtsHeader(object_type=2, sample_rate_index=4, channels=2, header_size=7,
                           frame_length=369, raw_blocks=1)
    assert h.sample_rate == 44100
    assert h.config() == bytes.fromhex("1210")  # AAC LC, 44.1 kHz, stereo: the well-known 12 10


@pytest.mark.parametrize(("aot", "rate", "ch", "config"), [
    (2, 16000, 1, "1408"), (2, 8000, 1, "1588"), (2, 48000, 2, "1190"), (1, 44100, 2, "0a10"),
])
def test_build_and_parse_round_trip(aot: int, rate: int, ch: int, config: str) -> None:
    header = adts_header(aot, sample_rate_index(rate), ch, 100)
    h = parse_adts_header(header + bytes(100))
    assert (h.object_type, h.sample_rate, h.channels, h.frame_length) == (aot, rate, ch, 107)
    assert audio_specific_config(aot, sample_rate_index(rate), ch).hex() == config == h.config().hex()


def test_split_gives_raw_blocks_as_views() -> None:
    a, b = b"\x01" * 10, b"\x02" * 300
    data = adts_header(2, 8, 1, len(a)) + a + adts_header(2, 8, 1, len(b)) + b
    units = split_adts(data)
    assert [bytes(raw) for _, raw in units] == [a, b]
    assert all(isinstance(raw, memoryview) for _, raw in units)
    # With a CRC the header is 9 bytes: protection_absent = 0.
    crc = bytearray(adts_header(2, 8, 1, len(a) + 2))
    crc[1] &= 0xFE
    (unit,) = split_adts(bytes(crc) + b"\xab\xcd" + a)
    assert unit[0].header_size == 9 and bytes(unit[1]) == a


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff\xf1\x50", "3 bytes are too short for an ADTS header"),
    (b"\x00" * 7, "no ADTS syncword at offset 0"),
    (adts_header(2, 8, 1, 20) + bytes(5), "ADTS frame of 27 bytes truncated to 12"),
    (b"\xff\xf1\x7c\x40\x01\x00\x00", "reserved sampling_frequency_index 15"),
    (b"\xff\xf1\x50\x80\x00\xe0\x00", "aac_frame_length 7 leaves no room for data"),
    (adts_header(2, 8, 1, 4)[:6] + b"\xfd" + bytes(4), "ADTS frame holds 2 raw_data_blocks"),
])
def test_bad_input_raises_the_exact_error(data: bytes, message: str) -> None:
    with pytest.raises(AdtsError, match=f"^{message}$"):
        split_adts(data)


def test_trailing_garbage_after_whole_frames_is_an_error() -> None:
    good = adts_header(2, 8, 1, 3) + b"abc"
    with pytest.raises(AdtsError, match="no ADTS syncword at offset 10"):
        split_adts(good + b"\x00" * 8)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="44000 Hz"):
        sample_rate_index(44000)
    with pytest.raises(ValueError, match="does not fit"):
        adts_header(2, 4, 2, 8190)
    with pytest.raises(ValueError, match="no ADTS header"):
        adts_header(5, 4, 2, 10)  # HE-AAC's object type does not fit the 2-bit profile
    with pytest.raises(ValueError, match="no AudioSpecificConfig"):
        audio_specific_config(2, 13, 1)
