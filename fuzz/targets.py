"""Fuzz targets for the parsers that read network input: one function per parser.

Each target takes arbitrary bytes and feeds them to a parser the way the
platform does. It catches only the error types that parser documents for bad
input (``SipParseError``, ``SdpError``, ``ManscdpError``, ``RtspError``,
``ValidationError``; the PS demuxer documents none: it logs and resyncs). Any
other exception escapes, and the fuzzer reports it as a crash: the project
rule is a clear error or a logged drop for bad network input, never a crash.

This module does not import atheris: ``fuzz/run.py`` drives the targets with
it, and ``tests/unit/test_fuzz_corpus.py`` replays the seed corpora through
them in the normal test run. See docs/fuzzing.md.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from twisted.web.http import parse_qs

from gbplatform.api import schemas
from media import accel
from media.framing import FramingError, Rfc4571Framer
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.ps import PsDemuxer
from media.rtsp import (
    RtspError,
    RtspParser,
    RtspRequest,
    parse_npt_start,
    parse_rtsp_url,
    parse_scale,
    parse_transport,
)
from sip import sdp
from sip.endpoint import Endpoint
from sip.errors import SipParseError
from sip.headers import contacts, expires_value, from_header, to_header, validate_request, vias
from sip.manscdp import ManscdpError, decode
from sip.manscdp.dialects import version_from_header
from sip.message import Request
from sip.parser import StreamParser, parse_datagram
from sip.subscription import parse_subscription_state

SOURCE = ("UDP", "127.0.0.1", 5999)



def quiet_logs() -> None:
    """The parsers log what they drop; at fuzzing rates that is noise, not signal.

    Called by the atheris runner only: the corpus replay in the test suite
    imports this module, and disabling logging at import would silence every
    later test's log assertions.
    """
    logging.disable(logging.CRITICAL)


def _split(data: bytes) -> tuple[bytes, bytes]:
    """Two pieces, cut where the last byte says: the stream parsers must not care where."""
    if not data:
        return b"", b""
    cut = data[-1] % (len(data) + 1)
    return data[:cut], data[cut:]


def sip_target(data: bytes) -> None:
    """SIP (RFC 3261 §7, §18.3): a datagram, the same bytes as a stream, the lazy headers, the endpoint."""
    msg = None
    try:
        msg = parse_datagram(data)
        if isinstance(msg, Request):
            validate_request(msg)
        if msg is not None:
            vias(msg)
            from_header(msg)
            to_header(msg)
            contacts(msg)
            expires_value(msg.headers.get("Expires"))
            msg.serialize()
    except SipParseError:
        pass
    if msg is not None:
        # The headers the subscription and dialect code read (RFC 6665 §4.1.3, GB/T 28181-2022 §9.1).
        try:
            parse_subscription_state(msg.headers.get("Subscription-State"))
        except SipParseError:
            pass
        version_from_header(msg.headers.get("X-GB-Ver"))
    parser = StreamParser()
    for piece in _split(data):
        try:
            parser.feed(piece)
        except SipParseError:
            break
    # The endpoint turns every parse error into a MessageDropped event (and maybe a 400):
    # it documents no exception at all.
    endpoint = Endpoint(rng=random.Random(0))
    endpoint.receive_datagram(data, SOURCE, 0.0)
    endpoint.take_output()


def sdp_target(data: bytes) -> None:
    """SDP (RFC 4566 with GB/T 28181-2016 §F y= and f=): parse, and what parses serializes and parses again."""
    try:
        description = sdp.parse(data)
    except sdp.SdpError:
        return
    sdp.parse(sdp.serialize(description))


def manscdp_target(data: bytes) -> None:
    """MANSCDP XML (GB/T 28181-2016 Annex A) under both default charsets the platform uses."""
    for charset in ("gb2312", "utf-8"):
        try:
            decode(data, default_charset=charset)
        except ManscdpError:
            pass


def ps_target(data: bytes) -> None:
    """MPEG-PS (ISO/IEC 13818-1 §2.5) as RTP payloads deliver it: in two chunks, then flushed."""
    demuxer = PsDemuxer(max_frame_bytes=64 * 1024)
    for piece in _split(data):
        demuxer.feed(piece, now=0.0)
    demuxer.flush()


def _rfc4571(data: bytes, compiled: bool) -> tuple[list[bytes], int, str | None]:
    """The packets, empty frames and error of a framed byte stream, on one path."""
    framer = Rfc4571Framer()
    if not compiled:
        framer._split = None
    packets: list[bytes] = []
    error = None
    for piece in _split(data):
        try:
            packets += framer.feed(piece)
        except FramingError as e:
            error = str(e)
            break
    return packets, framer.skipped_empty, error


def _ingest_state(packets: list[bytes], compiled: bool) -> tuple[object, ...]:
    """What an ingest leaves after the packets, in read passes of three, on one path."""
    saved = accel.ext
    if not compiled:
        accel.ext = None
    try:
        ingest = RtpIngest(FrameDispatcher())
    finally:
        accel.ext = saved
    now = 0.0
    for i in range(0, len(packets), 3):
        ingest.datagrams(packets[i : i + 3], now)
        now += 0.04
    ingest.close(now)
    r = ingest.reorder
    return (ingest.stats, r.stats, r._expected, r._last_ts, bytes(r._fate), ingest.demuxer.stats)


def rtp_target(data: bytes) -> None:
    """RTP over TCP (RFC 4571 §2, RFC 2326 §10.12) into an ingest: the compiled path against Python.

    The input is a framed byte stream, so the fuzzer shapes packet boundaries
    as well as RTP headers (RFC 3550 §5.1) and PS payloads. Both paths
    (media/accel.py) must split it into the same packets with the same error,
    and leave the ingest with the same counters and reorder state; a
    difference raises ``AssertionError``, which the fuzzer reports as a crash.
    Without the compiled module only the Python path runs.
    """
    compiled = accel.ext is not None
    packets, empty, error = _rfc4571(data, False)
    if compiled:
        got = _rfc4571(data, True)
        if got != (packets, empty, error):
            raise AssertionError(f"RFC 4571 split differs: compiled {got[1:]}, python {(empty, error)}")
    state = _ingest_state(packets, False)
    if compiled:
        got_state = _ingest_state(packets, True)
        if got_state != state:
            raise AssertionError(f"ingest state differs: compiled {got_state}, python {state}")


def rtsp_target(data: bytes) -> None:
    """RTSP (RFC 2326 §6, §10.12): the control stream, then each request's URL, Transport, Range and Scale."""
    parser = RtspParser()
    items: list[object] = []
    for piece in _split(data):
        try:
            items += parser.feed(piece)
        except RtspError:
            break
    for item in items:
        if not isinstance(item, RtspRequest):
            continue
        checks: list[tuple[Callable[[str], object], str | None]] = [
            (parse_rtsp_url, item.uri),
            (parse_transport, item.header("Transport")),
            (parse_npt_start, item.header("Range")),
            (parse_scale, item.header("Scale")),
        ]
        for check, value in checks:
            if value is None:
                continue
            try:
                check(value)
            except RtspError:
                pass


def http_query_target(data: bytes) -> None:
    """An HTTP query string, split as Twisted does (``parse_qs(q, 1)``), through every query parser of the API."""
    args = parse_qs(data, 1)
    parsers: list[Callable[[schemas.Args], object]] = [
        schemas.parse_device_list,
        schemas.parse_channel_list,
        schemas.parse_trace_limit,
        schemas.parse_time_range,
        schemas.parse_day,
    ]
    for parse in parsers:
        try:
            parse(args)
        except schemas.ValidationError:
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip": sip_target,
    "sdp": sdp_target,
    "manscdp": manscdp_target,
    "ps": ps_target,
    "rtp": rtp_target,
    "rtsp": rtsp_target,
    "http_query": http_query_target,
}
