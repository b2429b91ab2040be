"""The media worker channel's codec (media/workerwire.py): round trips, split input, broken records."""

from __future__ import annotations

import struct

import pytest

from media import workerwire as wire
from media.frame import Codec, Frame

FRAME = Frame(Codec.H264, b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 4, 900000, 896400, True, 0xE0)

MESSAGES: list[wire.Message] = [
    wire.Open(1, "udp", 1234567890, 10.0, 4 * 1024 * 1024, 2, "34020000001310000001"),
    wire.Open(2, "tcp-active", None, 0.5, 65536, 0, "通道"),
    wire.Open(3, "tcp-passive", 0, 3.0, 65536, 1, ""),
    wire.Rekey(1, 42),
    wire.Rekey(1, None),
    wire.PayloadFormats(1, {96: "PS", 98: "H264", 99: "H265"}),
    wire.PayloadFormats(7, {}),
    wire.Connect(2, "192.0.2.7", 6000),
    wire.Close(1),
    wire.FrameMessage(1, FRAME, 1733400000.125),
    wire.FrameMessage(4294967295, Frame(Codec.G711A, b"", -5, 0, False, 0xC0), 0.0),
    wire.Stats(1),
    wire.Stats(1, packets=10, bytes=13000, bad_packets=1, foreign_ssrc=2, unknown_payload_type=3, after_marker=4,
               first_packet_at=100.5, last_packet_at=101.25, received=11, delivered=10, lost=1, duplicates=2,
               reordered=3, late=4, resets=5, jitter=90.5, depacketizers=(Codec.H264, Codec.H265),
               stream_types=((0xE0, 0x1B), (0xC0, 0x90))),
    wire.Timeout(1, "no RTP for 10 s"),
    wire.Connected(2),
    wire.ConnectFailed(2, "Connection refused"),
    wire.Closed(1),
]


def test_every_message_round_trips() -> None:
    data = b"".join(wire.encode(m) for m in MESSAGES)
    assert wire.WireDecoder().feed(data) == MESSAGES


def test_frame_header_and_data_written_apart_decode_as_one() -> None:
    header = wire.encode_frame_header(9, FRAME, 5.0)
    assert header + FRAME.data == wire.encode(wire.FrameMessage(9, FRAME, 5.0))
    assert wire.WireDecoder().feed(header + FRAME.data) == [wire.FrameMessage(9, FRAME, 5.0)]


def test_input_split_at_every_point_and_byte_by_byte() -> None:
    data = b"".join(wire.encode(m) for m in MESSAGES[:12])
    for cut in range(len(data) + 1):
        dec = wire.WireDecoder()
        assert dec.feed(data[:cut]) + dec.feed(data[cut:]) == MESSAGES[:12], cut
        assert dec.buffered == 0
    dec = wire.WireDecoder()
    out: list[wire.Message] = []
    for i in range(len(data)):
        out += dec.feed(data[i:i + 1])
    assert out == MESSAGES[:12]


def test_trailing_partial_record_waits() -> None:
    dec = wire.WireDecoder()
    closed = wire.encode(wire.Closed(3))
    assert dec.feed(closed + closed[:3]) == [wire.Closed(3)]
    assert dec.buffered == 3
    assert dec.feed(closed[3:]) == [wire.Closed(3)]


def test_oversize_record_is_an_error_and_the_decoder_stays_broken() -> None:
    dec = wire.WireDecoder(max_record=1024)
    with pytest.raises(wire.WireError, match="record length 1025 is outside 1-1024"):
        dec.feed(struct.pack("!I", 1025))
    with pytest.raises(wire.WireError, match="already broken"):
        dec.feed(wire.encode(wire.Closed(1)))
    with pytest.raises(wire.WireError, match="outside"):
        wire.WireDecoder().feed(struct.pack("!I", wire.MAX_RECORD + 1) + b"\x10")


def test_oversize_frame_is_refused_at_encoding() -> None:
    big = Frame(Codec.H264, bytes(wire.MAX_RECORD), 0, 0, True, 0xE0)
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.encode_frame_header(1, big, 0.0)


@pytest.mark.parametrize(("record", "message"), [
    (b"\x00\x00\x00\x00", "record length 0"),
    (b"\x00\x00\x00\x01\x63", "record type 99 unknown"),
    (b"\x00\x00\x00\x03\x05\x00\x01", "record type 5: 2 bytes"),  # Close with 2 bytes
    (b"\x00\x00\x00\x03\x12\x00\x01", "malformed body"),  # Timeout with 2 bytes
    (b"\x00\x00\x00\x06\x05\x00\x00\x00\x01\x00", "record type 5: 5 bytes"),  # Close with one too many
    (wire.encode(wire.Timeout(1, "x"))[:-1] + b"\xff", "not UTF-8"),
    (b"\x00\x00\x00\x08\x03\x00\x00\x00\x01\x01\x60\x09", "out of range"),  # format 9
    (b"\x00\x00\x00\x08\x03\x00\x00\x00\x01\x02\x60\x00", "2 entries in 2 bytes"),
    (wire.encode(wire.Open(1, "udp", 1, 1.0, 1, 0, ""))[:9] + b"\x07" + wire.encode(
        wire.Open(1, "udp", 1, 1.0, 1, 0, ""))[10:], "transport mode 7 unknown"),
    (wire.encode(wire.FrameMessage(1, FRAME, 0.0))[:9] + b"\x63" + wire.encode(
        wire.FrameMessage(1, FRAME, 0.0))[10:], "frame codec 99 unknown"),
])
def test_garbage_is_an_error(record: bytes, message: str) -> None:
    dec = wire.WireDecoder()
    with pytest.raises(wire.WireError, match=message):
        dec.feed(record)
    assert dec.failed is not None


def test_records_before_a_broken_one_are_not_returned_twice() -> None:
    dec = wire.WireDecoder()
    with pytest.raises(wire.WireError):
        dec.feed(wire.encode(wire.Closed(1)) + b"\x00\x00\x00\x01\x63")
