"""RFC 4475 torture messages through the parser, the validator, the stream framer and the endpoint.

The vectors are byte-exact files in ``shared/vectors/rfc4475`` (INDEX.tsv says
``parse`` or ``reject`` for each). The rules checked here:

- ``parse``: ``parse_datagram`` returns a message; a request then passes
  ``validate_request``, except the three the RFC leaves to the application
  (TC_INSUF_I, TC_MULTI01_I, TC_MCL01_I), which we refuse with 400.
- ``reject``: ``parse_datagram`` or ``validate_request`` raises SipParseError.
- nothing ever raises anything else, on any path.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from sip.endpoint import Endpoint, MessageDropped, RequestReceived
from sip.errors import SipParseError
from sip.headers import contacts, from_header, to_header, top_via, validate_request, vias
from sip.message import Message, Request, Response
from sip.parser import StreamParser, parse_datagram
from tests.conftest import (
    SHARED_ENV,
    ci_requires_everything,
    locate_shared_dir,
    missing_shared_reason,
)

SOURCE = ("UDP", "127.0.0.1", 5999)
# RFC 4475 §3.3.1, §3.3.8, §3.3.9: the parser accepts them, the application answers 400.
APPLICATION_REJECTS = {"TC_INSUF_I.dat", "TC_MULTI01_I.dat", "TC_MCL01_I.dat"}
# A response needs Via, From, To, Call-ID and CSeq to copy (RFC 3261 §8.2.6.2):
# TC_TEST_I has neither Via nor CSeq, so it can only be dropped.
UNANSWERABLE = {"TC_TEST_I.dat"}


@dataclass(frozen=True)
class Vector:
    file: str
    section: str
    title: str
    expected: str

    def read(self, shared: Path) -> bytes:
        return (shared / "vectors" / "rfc4475" / self.file).read_bytes()

    @property
    def is_request(self) -> bool:
        return self.file not in _RESPONSES


_RESPONSES = {"TC_UNREASON_V.dat", "TC_NOREASON_V.dat", "TC_SCALARLG_V.dat", "TC_BIGCODE_V.dat", "TC_BCAST_V.dat"}


def _load_index() -> list[Vector]:
    shared = locate_shared_dir()
    if shared is None:
        return []
    with (shared / "vectors" / "rfc4475" / "INDEX.tsv").open(newline="") as f:
        return [Vector(r["file"], r["rfc4475_section"], r["title"], r["expected"]) for r in csv.DictReader(f, delimiter="\t")]


VECTORS = _load_index()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vector" in metafunc.fixturenames:
        if VECTORS:
            metafunc.parametrize("vector", VECTORS, ids=[v.file.removesuffix(".dat") for v in VECTORS])
        elif ci_requires_everything():
            # Unmarked: the shared_dir fixture then fails each test instead of skipping it.
            metafunc.parametrize("vector", [pytest.param(None, id="shared-missing")])
        else:
            metafunc.parametrize("vector", [pytest.param(None, marks=pytest.mark.skip(reason=missing_shared_reason()))])


def snapshot(msg: Message) -> tuple[object, ...]:
    """Everything that makes two parsed messages the same."""
    if isinstance(msg, Request):
        start: tuple[object, ...] = ("request", msg.method, msg.uri, msg.version)
    else:
        assert isinstance(msg, Response)
        start = ("response", msg.status, msg.reason, msg.version)
    return (*start, list(msg.headers), msg.body)


def feed_stream(data: bytes, chunk: int | None) -> tuple[list[Message], SipParseError | None, StreamParser]:
    """Feed ``data`` whole (chunk None) or in chunks; stop at the first SipParseError."""
    parser = StreamParser()
    messages: list[Message] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        try:
            messages.extend(parser.feed(piece))
        except SipParseError as e:
            messages.extend(e.framed)  # completed before the error: never lost
            return messages, e, parser
    return messages, None, parser


def content_length_exact(msg: Message) -> bool:
    lengths = msg.headers.get_all("Content-Length")
    return len(lengths) == 1 and lengths[0].strip().isdigit() and int(lengths[0]) == len(msg.body)


# -- the index itself ---------------------------------------------------------


def test_index_is_complete(shared_dir: Path) -> None:
    files = {p.name for p in (shared_dir / "vectors" / "rfc4475").glob("*.dat")}
    assert {v.file for v in VECTORS} == files
    assert len(VECTORS) == 50  # 49 from RFC 4475 §3, plus TC_TEST_I
    assert {v.expected for v in VECTORS} == {"parse", "reject"}


def test_shared_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SHARED_ENV, str(tmp_path))
    assert locate_shared_dir() == tmp_path.resolve()
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "missing"))
    assert locate_shared_dir() is None
    assert SHARED_ENV in missing_shared_reason() and "missing" in missing_shared_reason()


# -- datagram parser and validator --------------------------------------------


def test_datagram(vector: Vector, shared_dir: Path) -> None:
    data = vector.read(shared_dir)
    if vector.expected == "parse":
        msg = parse_datagram(data)
        assert msg is not None
        assert isinstance(msg, Request) == vector.is_request
        if isinstance(msg, Request):
            if vector.file in APPLICATION_REJECTS:
                with pytest.raises(SipParseError) as info:
                    validate_request(msg)
                assert info.value.status_hint == 400
                assert info.value.message is msg
            else:
                validate_request(msg)
        return
    try:
        msg = parse_datagram(data)
    except SipParseError as e:
        assert e.status_hint == (505 if vector.file == "TC_BADVERS_V.dat" else 400)
        assert e.reason
        return
    assert isinstance(msg, Request), "a rejected response must fail in the parser"
    with pytest.raises(SipParseError) as info:
        validate_request(msg)
    assert info.value.status_hint == 400
    assert info.value.message is msg  # so the endpoint can answer it


# -- the stream framer ----------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytewise", "chunks7"])
def test_stream(vector: Vector, shared_dir: Path, chunk: int | None) -> None:
    data = vector.read(shared_dir)
    messages, error, parser = feed_stream(data, chunk)
    # Bounded: nothing is kept beyond the input, and never more than the head limit.
    assert parser.buffered <= len(data)
    if vector.expected == "reject":
        assert error is not None or not messages or all(
            _fails_validation(m) for m in messages
        ), "a rejected vector must not frame a valid message"
        return
    datagram = parse_datagram(data)
    assert datagram is not None
    if not content_length_exact(datagram):
        return  # no (or conflicting) Content-Length: stream framing differs by design (RFC 3261 §18.3)
    if error is not None:
        # Trailing garbage after the first message (TC_DBLREQ) fails the stream
        # only after the first message was handed over.
        assert vector.file == "TC_DBLREQ.dat"
    assert messages, error
    assert snapshot(messages[0]) == snapshot(datagram)


def _fails_validation(msg: Message) -> bool:
    if not isinstance(msg, Request):
        return False
    try:
        validate_request(msg)
    except SipParseError:
        return True
    return False


def test_dblreq_stream_frames_both_messages(shared_dir: Path) -> None:
    """RFC 4475 §3.1.1.8: on a stream the trailing octets are the next message."""
    data = (shared_dir / "vectors" / "rfc4475" / "TC_DBLREQ.dat").read_bytes()
    for chunk in (None, 1):
        messages, error, _ = feed_stream(data, chunk)
        assert [m.method for m in messages if isinstance(m, Request)] == ["REGISTER", "INVITE"]
        # Its Content-Length (150) stops short of the body's end: the rest is garbage.
        assert error is not None


# -- the endpoint -------------------------------------------------------------------


def test_endpoint(vector: Vector, shared_dir: Path) -> None:
    data = vector.read(shared_dir)
    ep = Endpoint(rng=random.Random(0))
    events = ep.receive_datagram(data, SOURCE, 0.0)
    out = ep.take_output()
    # Never answer a Via host (192.0.2.x, example.com): only the packet's source.
    assert all(dest == SOURCE for _, dest in out)
    statuses = [_status(raw) for raw, _ in out]
    if not vector.is_request:
        assert out == []
        assert len(events) == 1 and isinstance(events[0], MessageDropped)
        return
    if vector.expected == "reject" or vector.file in APPLICATION_REJECTS:
        assert len(events) == 1 and isinstance(events[0], MessageDropped)
        if vector.file in UNANSWERABLE:
            assert out == []
        else:
            assert statuses == [505 if vector.file == "TC_BADVERS_V.dat" else 400]
            raw = out[0][0]
            assert b"Warning: 399 gbplatform" in raw
            # The answer copies what identifies the request (RFC 3261 §8.2.6.2).
            # TC_INSUF_I lacks some of them; every other one has all five.
            copied = (b"Via",) if vector.file == "TC_INSUF_I.dat" else (b"Via", b"From", b"To", b"Call-ID", b"CSeq")
            for name in copied:
                assert b"\r\n" + name + b": " in raw, name
        return
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, RequestReceived)
    assert event.source == SOURCE
    assert (event.transaction is None) == (event.request.method == "ACK")
    assert out == []


def _status(raw: bytes) -> int:
    # Read the status line by hand: a 400 copies the request's CSeq, which may
    # be the overlarge one (TC_SCALAR02_V) our parser refuses.
    version, code, _ = raw.split(b" ", 2)
    assert version == b"SIP/2.0"
    return int(code)


# -- field checks on selected vectors ----------------------------------------------


def _parse(shared: Path, name: str) -> Message:
    msg = parse_datagram((shared / "vectors" / "rfc4475" / name).read_bytes())
    assert msg is not None
    return msg


def test_wsinv_fields(shared_dir: Path) -> None:
    """§3.1.1.1: folding, free whitespace, compact forms, escaped quotes."""
    msg = _parse(shared_dir, "TC_WSINV.dat")
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.cseq == (9, "INVITE")
    assert msg.headers.get("Max-Forwards") == "0068"
    assert to_header(msg).tag == "1918181833n"
    frm = from_header(msg)
    assert frm.tag == "98asjd8"
    assert frm.display == 'J Rosenberg \\\\\\"'
    assert [(v.transport, v.host) for v in vias(msg)] == [
        ("UDP", "192.0.2.2"),
        ("TCP", "spindle.example.com"),
        ("UDP", "192.168.255.111"),
    ]
    assert vias(msg)[2].branch == "z9hG4bK30239"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    [contact] = contacts(msg)
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")
    assert msg.content_type == "application/sdp"


def test_intmeth_fields(shared_dir: Path) -> None:
    """§3.1.1.2: the user part of a URI may hold '?' and ';'."""
    msg = _parse(shared_dir, "TC_INTMETH.dat")
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq == (139122385, msg.method)
    uri = to_header(msg).sip_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.host == "example.com" and uri.headers is None
    assert from_header(msg).tag == "_token~1'+`*%!-."
    # A UTF-8 header value decodes as text (other bytes go through surrogateescape).
    raw = msg.headers.get("extensionHeader-!.%*+_`'~")
    assert raw is not None and raw == "\ufeff大停電"


def test_dblreq_ignores_trailing_octets(shared_dir: Path) -> None:
    msg = _parse(shared_dir, "TC_DBLREQ.dat")
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # compact "I:"


def test_transports_vias(shared_dir: Path) -> None:
    msg = _parse(shared_dir, "TC_TRANSPORTS_V.dat")
    assert [v.transport for v in vias(msg)] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert top_via(msg).host == "t1.example.com"


def test_mpart01_binary_body_kept(shared_dir: Path) -> None:
    msg = _parse(shared_dir, "TC_MPART01.dat")
    assert len(msg.body) == 553
    assert b"\x00" not in msg.body[:20] and msg.body.startswith(b"--7a9cbec02ceef655")
    assert msg.content_type == "multipart/mixed"


def test_reason_phrases(shared_dir: Path) -> None:
    unusual = _parse(shared_dir, "TC_UNREASON_V.dat")
    assert isinstance(unusual, Response) and unusual.status == 200
    assert unusual.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    empty = _parse(shared_dir, "TC_NOREASON_V.dat")
    assert isinstance(empty, Response) and empty.status == 100 and empty.reason == ""


def test_escnull_contacts(shared_dir: Path) -> None:
    msg = _parse(shared_dir, "TC_ESCNULL_V.dat")
    assert [c.sip_uri.user for c in contacts(msg)] == ["%00", "%00%00"]


def test_inv2543_body_is_rest_of_datagram(shared_dir: Path) -> None:
    """§3.4.1: no Content-Length over UDP, the body runs to the end of the datagram."""
    data = (shared_dir / "vectors" / "rfc4475" / "TC_INV2543_I.dat").read_bytes()
    msg = parse_datagram(data)
    assert msg is not None and "Content-Length" not in msg.headers
    assert msg.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert top_via(msg).branch is None


def test_mcl01_keeps_everything(shared_dir: Path) -> None:
    msg = _parse(shared_dir, "TC_MCL01_I.dat")
    assert msg.headers.get_all("Content-Length") == ["13", "5"]
    assert msg.body.startswith(b"There's no way")


def test_bcast_second_via(shared_dir: Path) -> None:
    msg = _parse(shared_dir, "TC_BCAST_V.dat")
    assert vias(msg)[1].host == "255.255.255.255"


def test_badvers_answer_is_505(shared_dir: Path) -> None:
    data = (shared_dir / "vectors" / "rfc4475" / "TC_BADVERS_V.dat").read_bytes()
    with pytest.raises(SipParseError) as info:
        parse_datagram(data)
    assert info.value.status_hint == 505
    assert isinstance(info.value.message, Request)
