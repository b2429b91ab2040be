"""Garbage media must not flood the log (issue 8 item 9): a camera sending
junk in every packet was one log line per packet; now one per interval with
a count."""

from __future__ import annotations

import logging

import pytest

from media.ps import PsDemuxer
from tests.unit.test_media_ps import pack_header, pes


def test_garbage_in_every_packet_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="media.ps")
    dm = PsDemuxer()
    junk = b"\xde\xad\xbe\xef" * 8
    broken = b"\x00\x00\x01\xe0\x00\x03\x80\x00\x00"  # a PES too short for its header
    now = 0.0
    for _ in range(2000):
        now += 0.002  # 500 packets a second for 4 s
        dm.feed(pack_header() + junk + broken + pack_header(), now)
    assert dm.stats.resyncs == 2000
    lines = [r.getMessage() for r in caplog.records if r.name == "media.ps"]
    assert len(lines) <= 4, lines[:10]
    caplog.clear()
    dm.feed(pack_header() + junk + pack_header(), now + 10)
    [line] = [r.getMessage() for r in caplog.records if r.name == "media.ps"]
    assert "PS resync" in line and "2000 times" in line, line


def test_without_a_clock_the_first_line_of_each_kind_still_comes(caplog: pytest.LogCaptureFixture) -> None:
    """Offline readers (files) pass no time: they still hear about garbage."""
    caplog.set_level(logging.INFO, logger="media.ps")
    dm = PsDemuxer()
    dm.feed(pack_header() + b"\xde\xad\xbe\xef" + pes(0xE0, b"x", pts=0) + pack_header())
    assert any("PS resync" in r.getMessage() for r in caplog.records)


def test_bad_rtp_and_foreign_ssrc_floods_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    from media.ingest import RtpIngest
    from media.pipeline import FrameDispatcher
    from media.rtp import RtpPacket

    caplog.set_level(logging.INFO, logger="media.ingest")
    ingest = RtpIngest(FrameDispatcher(), ssrc=1)
    foreign = RtpPacket(payload_type=96, sequence=1, timestamp=0, ssrc=2, payload=b"x").serialize()
    for i in range(5000):
        ingest.datagram(b"\x01\x02", i * 0.001)  # not RTP
        ingest.datagram(foreign, i * 0.001)
    assert ingest.stats.bad_packets == ingest.stats.foreign_ssrc == 5000
    assert len([r for r in caplog.records if r.getMessage().startswith("dropping")]) == 2
