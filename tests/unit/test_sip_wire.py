"""Real device traffic (``shared/vectors/sip-wire/*.log``) through the SIP parser.

The logs are text: each message is a block headed
``===== HH:MM:SS RECV|SEND addr (N bytes, decoded as utf-8)``, followed by the
message with LF line ends and one blank separator line; ``#####`` lines are
annotations of the capture tool. Non-SIP datagrams are logged on one line as
``===== HH:MM:SS RECV non-SIP datagram from addr (N bytes) hex=...``.

``load_wire_log`` turns each block back into the bytes that were on the wire
(UTF-8, CRLF line ends) and checks their size against N, so a Content-Length
in the log always matches its body.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.auth import parse_auth_header
from sip.endpoint import Endpoint, RequestReceived
from sip.headers import contacts, from_header, is_token, to_header, top_via, validate_request
from sip.message import Message, Request, Response, make_response
from sip.parser import StreamParser, parse_datagram
from sip.uri import is_gb_id

_BLOCK_RE = re.compile(
    r"^===== (?P<time>\d\d:\d\d:\d\d) (?P<dir>RECV|SEND) "
    r"(?:(?P<addr>\S+) \((?P<size>\d+) bytes, decoded as (?P<enc>[\w-]+)\)"
    r"|non-SIP datagram from (?P<naddr>\S+) \((?P<nsize>\d+) bytes\) hex=(?P<hex>[0-9a-f]+))$"
)

LOGS = ["exosip-device-udp.log", "exosip-device-gb2312-label-utf8-body.log", "pjsua2-device.log"]


@dataclass
class WireBlock:
    """One logged datagram, as it was on the wire."""

    time: str
    direction: str
    addr: str
    data: bytes
    sip: bool = True
    notes: list[str] = field(default_factory=list)


def load_wire_log(path: Path) -> list[WireBlock]:
    """Split a sip-wire log into its datagrams (see the module docstring)."""
    blocks: list[WireBlock] = []
    current: WireBlock | None = None
    size = 0
    lines: list[str] = []

    def close() -> None:
        if current is None or not current.sip:
            return
        # Joining the lines drops the newline of the blank separator line.
        text = "\n".join(lines)
        current.data = text.replace("\n", "\r\n").encode("utf-8")
        assert len(current.data) == size, (path.name, current.time, len(current.data), size)

    # Not read_text(): universal newlines would eat the one bare CR that eXosip
    # leaves at the end of an SDP body ("y=...\r\r\n" on the wire).
    text = path.read_bytes().decode("utf-8")
    for line in text.removesuffix("\n").split("\n"):
        m = _BLOCK_RE.match(line)
        if m is not None:
            close()
            lines = []
            if m["hex"] is not None:
                current = WireBlock(m["time"], m["dir"], m["naddr"], bytes.fromhex(m["hex"]), sip=False)
                assert len(current.data) == int(m["nsize"])
            else:
                assert m["enc"] == "utf-8"
                current = WireBlock(m["time"], m["dir"], m["addr"], b"")
                size = int(m["size"])
            blocks.append(current)
        elif line.startswith("#####"):
            if current is not None:
                current.notes.append(line[5:].strip())
        elif line.startswith("====="):
            raise AssertionError(f"unrecognised block header in {path.name}: {line!r}")
        elif current is not None:
            lines.append(line)
    close()
    return blocks


@pytest.fixture(scope="module")
def wire_dir(shared_dir: Path) -> Path:
    return shared_dir / "vectors" / "sip-wire"


def _parsed(block: WireBlock) -> Message:
    msg = parse_datagram(block.data)
    assert msg is not None, block.data[:80]
    return msg


def _start(msg: Message) -> tuple[object, ...]:
    if isinstance(msg, Request):
        return (msg.method, msg.uri)
    assert isinstance(msg, Response)
    return (msg.status, msg.reason)


def _snapshot(msg: Message) -> tuple[object, ...]:
    return (type(msg).__name__, *_start(msg), list(msg.headers), msg.body)


# -- the loader ---------------------------------------------------------------------


def test_loader_splits_exosip_log(wire_dir: Path) -> None:
    blocks = load_wire_log(wire_dir / "exosip-device-udp.log")
    assert len(blocks) == 27
    assert blocks[0].direction == "RECV" and blocks[0].addr == "127.0.0.1:5070"
    assert blocks[0].data.startswith(b"REGISTER sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n")
    assert blocks[0].data.endswith(b"Content-Length: 0\r\n\r\n")
    assert b"\n" not in blocks[0].data.replace(b"\r\n", b"")
    assert blocks[4].notes and blocks[4].notes[0].startswith("digest check: OK")
    [stun] = [b for b in blocks if not b.sip]
    assert stun.data[:8] == bytes.fromhex("000100002112a442") and len(stun.data) == 20


# -- every block parses -----------------------------------------------------------------


@pytest.mark.parametrize("log", LOGS)
def test_every_block_parses(wire_dir: Path, log: str) -> None:
    blocks = load_wire_log(wire_dir / log)
    assert blocks
    for block in blocks:
        if not block.sip:
            assert parse_datagram(block.data) is None  # STUN: dropped, not an error
            continue
        msg = _parsed(block)
        lengths = msg.headers.get_all("Content-Length")
        assert len(lengths) == 1 and int(lengths[0]) == len(msg.body)
        assert msg.call_id
        number, method = msg.cseq
        assert number > 0 and is_token(method)
        assert top_via(msg).transport == "UDP"
        # GB/T 28181-2016 §9.1: both ends are addressed by 20-digit codes.
        assert is_gb_id(from_header(msg).user), msg.headers.get("From")
        assert is_gb_id(to_header(msg).user), msg.headers.get("To")
        if isinstance(msg, Request):
            assert method == msg.method
            assert msg.method in {"REGISTER", "MESSAGE", "INVITE", "ACK", "BYE"}
            validate_request(msg)
        else:
            assert isinstance(msg, Response) and msg.status in (100, 200, 401)
            assert to_header(msg).tag or msg.status == 100
        # Re-serialising gives the same message back (Content-Length recomputed).
        again = parse_datagram(msg.serialize())
        assert again is not None and _snapshot(again)[:-2] == _snapshot(msg)[:-2]
        assert again.body == msg.body


def test_exosip_content_length_padding(wire_dir: Path) -> None:
    """eXosip pads Content-Length with spaces ("Content-Length:   390")."""
    blocks = load_wire_log(wire_dir / "exosip-device-udp.log")
    catalog = next(b for b in blocks if b"Content-Length:   390\r\n" in b.data)
    msg = _parsed(catalog)
    assert isinstance(msg, Request) and msg.method == "MESSAGE"
    assert msg.headers.get("Content-Length") == "390" and len(msg.body) == 390
    assert msg.content_type == "application/manscdp+xml"
    assert msg.body.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>')
    assert msg.body.endswith(b"</Response>\r\n")
    assert msg.call_id == "1878740358" and msg.cseq == (20, "MESSAGE")
    assert from_header(msg).user == "34020000001320000001"
    assert top_via(msg).params == {"rport": None, "branch": "z9hG4bK1155504600"}
    # The serialised form drops the padding, and still parses the same.
    assert b"Content-Length: 390\r\n" in msg.serialize()


def test_exosip_register_flow(wire_dir: Path) -> None:
    blocks = [b for b in load_wire_log(wire_dir / "exosip-device-udp.log") if b.sip]
    registers = [m for m in map(_parsed, blocks[:6]) if isinstance(m, Request)]
    assert [r.cseq for r in registers] == [(1, "REGISTER"), (2, "REGISTER"), (3, "REGISTER")]
    assert {r.call_id for r in registers} == {"764726777"}
    assert [("Authorization" in r.headers) for r in registers] == [False, False, True]
    assert registers[0].headers.get("Expires") == "3600"
    challenge = _parsed(blocks[1])
    assert isinstance(challenge, Response) and challenge.status == 401
    scheme, params = parse_auth_header(challenge.headers.get("WWW-Authenticate") or "")
    assert scheme == "Digest" and params["realm"] == "3402000000"


@pytest.mark.parametrize("log", LOGS)
def test_authorization_params_match_digest_check(wire_dir: Path, log: str) -> None:
    """The capture tool's "digest check" note lists the Authorization parameters it verified."""
    checked = 0
    for block in load_wire_log(wire_dir / log):
        notes = [n for n in block.notes if n.startswith("digest check: OK ")]
        if not notes:
            continue
        expected = ast.literal_eval(notes[0].removeprefix("digest check: OK "))
        msg = _parsed(block)
        assert isinstance(msg, Request) and msg.method == "REGISTER"
        scheme, params = parse_auth_header(msg.headers.get("Authorization") or "")
        assert scheme == "Digest"
        assert {k: params[k] for k in expected} == expected
        assert is_gb_id(params["username"]) and params["username"] == from_header(msg).user
        assert params["uri"] == msg.uri
        assert re.fullmatch(r"[0-9a-f]{32}", params["response"])
        checked += 1
    assert checked >= 1


def test_exosip_invite_flow(wire_dir: Path) -> None:
    msgs = [_parsed(b) for b in load_wire_log(wire_dir / "exosip-device-udp.log") if b.sip]
    invite_call = [m for m in msgs if m.call_id == "fbea8d622c8f461f@127.0.0.1"]
    kinds = [_start(m)[0] for m in invite_call]
    assert kinds == ["INVITE", 100, 200, "ACK", "BYE", 200]
    invite, trying, ok, ack = invite_call[:4]
    assert invite.headers.get("Subject") == "34020000001320000001:0200000329,34020000002000000001:0"
    assert invite.content_type == "application/sdp" and b"y=0200000329" in invite.body
    assert to_header(trying).tag is None
    assert to_header(ok).tag == "1444524996" and b"a=sendonly" in ok.body
    # The ACK of a 2xx is its own transaction (RFC 3261 §17.1.1.3): new branch.
    assert top_via(ack).branch != top_via(invite).branch
    assert ack.cseq == (104, "ACK") and to_header(ack).tag == "1444524996"
    # eXosip stamps rport in the Via of its responses (RFC 3581 §4).
    assert top_via(ok).params["rport"] == "5060"


def test_gb2312_label_utf8_body_stays_bytes(wire_dir: Path) -> None:
    """The XML says GB2312 but the bytes are UTF-8: the SIP layer must not decode it."""
    blocks = load_wire_log(wire_dir / "exosip-device-gb2312-label-utf8-body.log")
    catalog = next(
        m for m in map(_parsed, (b for b in blocks if b.sip and b.direction == "RECV"))
        if b"<CmdType>Catalog</CmdType>" in m.body and b"<Response>" in m.body
    )
    assert b'encoding="GB2312"' in catalog.body
    assert max(catalog.body) >= 0x80
    catalog.body.decode("utf-8")  # valid UTF-8 ...
    assert int(catalog.headers.get("Content-Length") or "0") == len(catalog.body)  # ... counted in bytes


def test_pjsua2_register(wire_dir: Path) -> None:
    blocks = load_wire_log(wire_dir / "pjsua2-device.log")
    first = _parsed(blocks[0])
    assert isinstance(first, Request) and first.method == "REGISTER"
    assert first.headers.get("User-Agent") == "pjsua2-gb-test"
    [contact] = contacts(first)
    uri = contact.sip_uri
    assert uri.params == {"ob": None}  # RFC 5626 outbound flag
    assert uri.user == "34020000001320000020" and uri.port == 5090
    assert "MESSAGE" in first.headers.get_all("Allow")
    assert len(first.headers.get_all("Allow")) == 12
    assert first.headers.get("Content-Length") == "0"
    assert top_via(first).branch and top_via(first).branch.startswith("z9hG4bKPj")  # type: ignore[union-attr]
    keepalive = next(
        m for m in map(_parsed, (b for b in blocks if b.sip)) if b"<CmdType>Keepalive</CmdType>" in m.body
    )
    assert keepalive.headers.get_all("Accept") == ["text/plain", "application/im-iscomposing+xml"]


# -- the whole capture over a TCP-like stream ----------------------------------------------


def _recv_stream(wire_dir: Path) -> tuple[bytes, list[Message]]:
    blocks = [b for b in load_wire_log(wire_dir / "exosip-device-udp.log") if b.sip and b.direction == "RECV"]
    return b"".join(b.data for b in blocks), [_parsed(b) for b in blocks]


def test_exosip_recv_stream_whole_and_bytewise(wire_dir: Path) -> None:
    stream, expected = _recv_stream(wire_dir)
    assert len(expected) == 13
    whole = StreamParser().feed(stream)
    assert [_snapshot(m) for m in whole] == [_snapshot(m) for m in expected]
    parser = StreamParser()
    bytewise = [m for i in range(len(stream)) for m in parser.feed(stream[i : i + 1])]
    assert [_snapshot(m) for m in bytewise] == [_snapshot(m) for m in expected]
    assert parser.buffered == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=40), keepalives=st.booleans())
def test_exosip_recv_stream_random_chunks(wire_dir: Path, sizes: list[int], keepalives: bool) -> None:
    stream, expected = _recv_stream(wire_dir)
    if keepalives:
        # RFC 5626 §3.5.1 CRLF keep-alives between messages are skipped.
        stream = b"\r\n\r\n" + stream.replace(b"\r\n\r\nSIP/2.0", b"\r\n\r\n\r\n\r\nSIP/2.0")
    parser = StreamParser()
    got: list[Message] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        got.extend(parser.feed(stream[pos : pos + size]))
        pos += size
        i += 1
    assert [_snapshot(m) for m in got] == [_snapshot(m) for m in expected]
    assert parser.buffered == 0


# -- replaying the device's side against an Endpoint -------------------------------------------


def test_replay_device_requests_into_endpoint(wire_dir: Path) -> None:
    """Every request the device sent becomes one RequestReceived; its Via gets the real port."""
    ep = Endpoint(rng=random.Random(0))
    source = ("UDP", "10.1.2.3", 40000)  # as if behind NAT: not the Via's 127.0.0.1:5070
    now = 0.0
    requests = 0
    for block in load_wire_log(wire_dir / "exosip-device-udp.log"):
        now += 0.5
        if block.direction != "RECV":
            continue
        events = ep.receive_datagram(block.data, source, now)
        if not block.sip:
            assert events == []
            continue
        msg = _parsed(block)
        if isinstance(msg, Response):
            continue  # answers to requests the logged platform sent, not this one
        [event] = events
        assert isinstance(event, RequestReceived)
        assert event.transaction is not None
        via = top_via(event.request)
        assert via.params["received"] == "10.1.2.3" and via.params["rport"] == "40000"
        ep.respond(event.transaction, make_response(event.request, 200, to_tag=ep.new_tag()), now)
        [(raw, dest)] = ep.take_output()
        assert dest == source
        answer = parse_datagram(raw)
        assert answer is not None
        assert top_via(answer).params == {
            "rport": "40000",
            "branch": top_via(msg).branch,
            "received": "10.1.2.3",
        }
        requests += 1
    assert requests == 7  # three REGISTERs, four MESSAGEs
