"""Recognise a canonical keepalive MESSAGE on its raw bytes and build its 200 OK (sans-IO).

Theory of operation
-------------------
Every registered GB/T 28181 device sends a Keepalive MESSAGE each
``keepalive_interval`` seconds (GB/T 28181-2016 §9.6.1): 50,000 devices at
60 s are 833 a second, most of a platform's SIP traffic. Almost all of them
have one shape: a MESSAGE outside any dialog with one Via, a From with a tag,
a To without one, Call-ID, CSeq, ``Content-Type: Application/MANSCDP+xml`` and
the canonical ``<Notify><CmdType>Keepalive</CmdType>...`` body (§A.2.5.2).

``match_keepalive`` checks a datagram against that shape, line by line, with
rules no looser than the full parser's (``sip.parser``, ``sip.headers.
validate_request``): what it accepts, the full path would accept and read the
same way. Anything else returns None and takes the full path: a header it does
not know (it cannot tell whether it matters), a folded or compact header,
several Vias, a To tag (in-dialog, RFC 3261 §12.2), a Via branch without the
RFC 3261 magic cookie (§17.2.3 RFC 2543 matching), a Content-Length that is
not the body's length, a body that is not the canonical keepalive. The body
itself is matched by ``sip.manscdp.keepalive.fast_keepalive``, the same
function the full MANSCDP decoder uses first, by the transaction user.

``KeepaliveRequest.response`` builds the 200 OK as ``make_response`` and
``Endpoint.respond`` do (RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq
copied, a tag added to To; §18.2.1 and RFC 3581 §4: ``received`` and ``rport``
stamped into the top Via), byte for byte the same as the full path's answer
given the same To tag (``tests/unit/test_sip_fastpath.py`` compares them).
What to do with the keepalive, and whether to answer it here at all, is the
transaction user's decision (``Endpoint.keepalive_handler``); retransmissions
are the endpoint's (RFC 3261 §17.2.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sip.errors import SipParseError
from sip.headers import MAX_CSEQ, Via

Addr = tuple[str, str, int]

# A datagram past this is no keepalive (the canonical one is ~500 bytes).
MAX_KEEPALIVE: Final = 4096

# From: a bracketed SIP URI with an alphanumeric user (a GB ID, GB/T 28181-2016 Annex D) and one tag
# parameter, nothing else (display names, other parameters: full path). ``NameAddr.parse`` reads it
# the same way and ``NameAddr.user`` returns the group.
_HOST: Final = rb"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?"
_FROM_RE: Final = re.compile(rb"<sip:([A-Za-z0-9]{1,64})@" + _HOST + rb">;tag=([A-Za-z0-9.!%*_+`'~-]{1,64})")
# To: the platform's URI, no tag (a tag means a dialog, RFC 3261 §12.2: full path).
_TO_RE: Final = re.compile(rb"<sip:[A-Za-z0-9]{1,64}@" + _HOST + rb">")
_CALL_ID_RE: Final = re.compile(rb"[\x21-\x7e]{1,128}")
_CSEQ_RE: Final = re.compile(rb"([0-9]{1,10}) MESSAGE")
_DIGITS_RE: Final = re.compile(rb"[0-9]{1,5}")
# The head: the request line, then header lines of printable ASCII (no CR, LF or other control byte).
_HEAD_RE: Final = re.compile(rb"MESSAGE ([\x21-\x7e]{1,300}) SIP/2\.0((?:\r\n[A-Za-z-]{1,32}[ \t]*:[\x20-\x7e]{0,512})+)")
# The Request-URI: ``SipUri.parse`` accepts all of these but a port out of range, checked here.
_URI_RE: Final = re.compile(rb"sip:[A-Za-z0-9]{1,64}@[A-Za-z0-9.-]{1,253}(?::([0-9]{1,5}))?")
_VIA_RE: Final = re.compile(rb"SIP/2\.0/UDP [\x21-\x7e]{1,400}")

# The headers a keepalive may carry, in the spelling of ``sip.message.canonical_name``; each at most once.
_REQUIRED: Final = frozenset({b"Via", b"From", b"To", b"Call-ID", b"CSeq", b"Content-Type", b"Content-Length"})
# Optional ones change nothing in the answer (RFC 3261 §20): Accept* speak of response bodies (a 200 to
# a MESSAGE has none), Allow and Supported inform. pjsua2 sends Accept. Require, Contact, Date, Expires
# and the rest take the full path, which checks or acts on them.
_OPTIONAL: Final = frozenset({
    b"Max-Forwards", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language", b"Allow", b"Supported",
})
_KNOWN: Final = _REQUIRED | _OPTIONAL


@dataclass(frozen=True, slots=True)
class KeepaliveRequest:
    """The parts of a canonical keepalive MESSAGE the transaction user and the 200 OK need."""

    device_id: str  # the From URI's user
    key: tuple[str, ...]  # its server transaction key (``sip.transaction.server_key``)
    via_text: str  # the top (only) Via, as received
    via: Via  # parsed; not changed (``response`` stamps a copy)
    from_value: str
    to_value: str
    call_id: str
    cseq: str
    body: bytes

    def response(self, source: Addr, to_tag: str, user_agent: str) -> bytes:
        """The 200 OK to this request, as the full path builds it (RFC 3261 §8.2.6.2, §18.2.1)."""
        via_text = self.via_text
        params = self.via.params
        if self.via.host != source[1] or ("rport" in params and params["rport"] is None):
            # Stamped as ``Endpoint._stamp_via`` does; unchanged, the Via goes back as it came.
            via = Via(self.via.transport, self.via.host, self.via.port, dict(params))
            if via.host != source[1]:
                via.params["received"] = source[1]
            if "rport" in via.params and via.params["rport"] is None:
                via.params["rport"] = str(source[2])  # RFC 3581 §4
                via.params.setdefault("received", source[1])
            via_text = str(via)
        return (
            f"SIP/2.0 200 OK\r\nVia: {via_text}\r\nFrom: {self.from_value}\r\nTo: {self.to_value};tag={to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {self.cseq}\r\nUser-Agent: {user_agent}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode("ascii")


def match_keepalive(data: bytes) -> KeepaliveRequest | None:
    """``data`` as a canonical keepalive MESSAGE (GB/T 28181-2016 §9.6.1), or None for the full path.

    Never raises: a datagram it cannot vouch for, however broken, is the full path's to judge.
    """
    if not data.startswith(b"MESSAGE ") or len(data) > MAX_KEEPALIVE:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = _HEAD_RE.fullmatch(data, 0, end)
    if head is None:
        # Not a request line and "Name: value" lines of printable ASCII: a bare CR or LF (the full
        # parser splits lines on LF too, so it would read other headers), folding, a control byte...
        return None
    uri = _URI_RE.fullmatch(head.group(1))
    if uri is None or (uri.group(1) is not None and not 0 < int(uri.group(1)) < 65536):
        return None
    found: dict[bytes, bytes] = {}
    for line in head.group(2)[2:].split(b"\r\n"):  # a loop beats findall here (measured)
        name, _, value = line.partition(b":")  # the head's pattern guarantees the colon
        name = name.rstrip(b" \t")
        if name not in _KNOWN or name in found:
            return None  # unknown, compact or repeated: the full path decides
        found[name] = value.strip(b" \t")
    if not _REQUIRED <= found.keys():
        return None  # a required header is missing: the full path answers 400
    body = data[end + 4 :]
    length = found[b"Content-Length"]
    if _DIGITS_RE.fullmatch(length) is None or int(length) != len(body):
        return None  # the full path keeps the first Content-Length octets; here only exact fits pass
    if found[b"Content-Type"].lower() != b"application/manscdp+xml":
        return None
    cseq = _CSEQ_RE.fullmatch(found[b"CSeq"])
    if cseq is None or int(cseq.group(1)) > MAX_CSEQ:
        return None
    from_match = _FROM_RE.fullmatch(found[b"From"])
    if (
        from_match is None
        or _TO_RE.fullmatch(found[b"To"]) is None
        or _CALL_ID_RE.fullmatch(found[b"Call-ID"]) is None
        or _VIA_RE.fullmatch(found[b"Via"]) is None
        or b"," in found[b"Via"]  # several Via values in one line
    ):
        return None
    max_forwards = found.get(b"Max-Forwards")
    if max_forwards is not None and (_DIGITS_RE.fullmatch(max_forwards) is None or int(max_forwards) > 255):
        return None
    via_text = found[b"Via"].decode("ascii")
    try:
        via = Via.parse(via_text)  # the parser the full path validates with: a Via it refuses is its to answer
    except SipParseError:
        return None
    branch = via.branch or ""
    if not branch.startswith("z9hG4bK"):
        return None
    return KeepaliveRequest(
        device_id=from_match.group(1).decode("ascii"),
        key=(branch, via.host, str(via.port or ""), "MESSAGE"),
        via_text=via_text,
        via=via,
        from_value=found[b"From"].decode("ascii"),
        to_value=found[b"To"].decode("ascii"),
        call_id=found[b"Call-ID"].decode("ascii"),
        cseq=found[b"CSeq"].decode("ascii"),
        body=body,
    )
