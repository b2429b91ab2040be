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
from sip.message import Request
from sip.parser import StreamParser, parse_datagram

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
    "rtsp": rtsp_target,
    "http_query": http_query_target,
}
