"""GB/T 28181 identifiers, SSRC allocation and SIP random tokens.

Theory of operation
-------------------
A GB/T 28181 device or platform is named by a 20-digit code (GB/T 28181-2016
Annex D): digits 1-8 are the civil (administrative region) code, 9-10 the
industry code, 11-13 the type code, 14 the network identifier and 15-20 a
sequence number.  Catalog trees also carry civil-code nodes of 2, 4, 6 or 8
digits (Annex D.1, province/city/district/grassroots).

The SSRC carried in the SDP ``y=`` line is ten decimal digits (GB/T 28181-2016
Annex F): the first is 0 for live video and 1 for history (playback/download),
the next five are digits 4-8 of the SIP domain, the last four a sequence number.
``SsrcAllocator`` hands out those sequences so that no two live leases share
one, which is what lets a single-port RTP receiver demultiplex by SSRC.

Every random token takes an explicit ``random.Random`` so tests can seed it.
"""

import random
import re

__all__ = [
    "SsrcAllocator",
    "SsrcExhaustedError",
    "domain_of",
    "gb_id_type",
    "id_kind",
    "is_civil_code",
    "is_gb_id",
    "new_branch",
    "new_call_id",
    "new_tag",
]

# ASCII digits only: str.isdigit() would also accept e.g. "²" or Arabic-Indic digits.
_GB_ID = re.compile(r"[0-9]{20}")
_CIVIL_CODE = re.compile(r"(?:[0-9]{2}){1,4}")
_DOMAIN = re.compile(r"[0-9]{10}")
_SSRC = re.compile(r"[01][0-9]{9}")

# GB/T 28181-2016 Annex D, Table D.1 (type codes, digits 11-13).
_KIND_BY_TYPE: dict[int, str] = {
    111: "dvr",
    112: "encoder",
    118: "nvr",
    131: "camera",
    132: "camera",
    134: "alarm_input",
    135: "alarm_output",
    200: "platform",
    215: "business_group",
    216: "virtual_org",
}

#: RFC 3261 §8.1.1.7: a branch starting with this cookie marks an RFC 3261 client.
BRANCH_MAGIC_COOKIE = "z9hG4bK"

_SEQUENCES = 10_000


def is_gb_id(s: str) -> bool:
    """True for a 20-digit device/platform code (GB/T 28181-2016 Annex D)."""
    return _GB_ID.fullmatch(s) is not None


def gb_id_type(s: str) -> int | None:
    """The type code (digits 11-13) of a 20-digit ID, or None if ``s`` is not one.

    GB/T 28181-2016 Annex D, Table D.1.
    """
    if not is_gb_id(s):
        return None
    return int(s[10:13])


def is_civil_code(s: str) -> bool:
    """True for a 2, 4, 6 or 8-digit civil code node (GB/T 28181-2016 Annex D.1)."""
    return _CIVIL_CODE.fullmatch(s) is not None


def id_kind(s: str) -> str:
    """Classify a catalog/device ID by GB/T 28181-2016 Annex D.

    Returns one of ``civil_code``, ``business_group``, ``virtual_org``,
    ``platform``, ``camera``, ``nvr``, ``dvr``, ``encoder``, ``alarm_input``,
    ``alarm_output``, ``device`` (any other front-end type 110-139) or ``unknown``.
    """
    if is_civil_code(s):
        return "civil_code"
    type_code = gb_id_type(s)
    if type_code is None:
        return "unknown"
    kind = _KIND_BY_TYPE.get(type_code)
    if kind is not None:
        return kind
    if 110 <= type_code <= 139:
        return "device"
    return "unknown"


def domain_of(platform_id: str) -> str:
    """The SIP domain (realm) of a platform: its first 10 digits.

    GB/T 28181-2016 §4.3 / Annex D: the domain is the centre code, i.e. the
    civil code plus industry code of the platform ID.
    """
    if not is_gb_id(platform_id):
        raise ValueError(f"not a 20-digit GB/T 28181 ID: {platform_id!r}")
    return platform_id[:10]


class SsrcExhaustedError(RuntimeError):
    """All 10,000 SSRC sequence numbers are leased."""


class SsrcAllocator:
    """Allocate ``y=`` SSRCs per GB/T 28181-2016 Annex F.

    Format: ``<0 live | 1 history><domain[3:8]><4-digit sequence>``.  Live and
    history SSRCs share one sequence space, so every leased SSRC differs in its
    last four digits and a single-port receiver can key on either the full
    SSRC or the sequence alone.  The cursor starts at a random sequence so that
    a restarted platform does not immediately reuse the SSRCs of streams a
    device may still be sending.
    """

    def __init__(self, domain: str, rng: random.Random) -> None:
        if _DOMAIN.fullmatch(domain) is None:
            raise ValueError(f"SIP domain must be 10 digits, got {domain!r}")
        self._prefix = domain[3:8]
        self._leased: dict[int, str] = {}
        self._cursor = rng.randrange(_SEQUENCES)

    @property
    def in_use(self) -> int:
        """Number of SSRCs currently leased."""
        return len(self._leased)

    def allocate(self, history: bool) -> str:
        """Lease a fresh SSRC; raises ``SsrcExhaustedError`` when all 10,000 are leased."""
        if len(self._leased) >= _SEQUENCES:
            raise SsrcExhaustedError(f"all {_SEQUENCES} SSRC sequences are in use")
        seq = self._cursor
        while seq in self._leased:
            seq = (seq + 1) % _SEQUENCES
        # Advancing past the lease (not back to its start) spreads reuse of a
        # just-released sequence as late as possible.
        self._cursor = (seq + 1) % _SEQUENCES
        ssrc = f"{1 if history else 0}{self._prefix}{seq:04d}"
        self._leased[seq] = ssrc
        return ssrc

    def release(self, ssrc: str) -> bool:
        """Return ``ssrc`` to the pool; False if it was not leased (already released)."""
        if not self.is_leased(ssrc):
            return False
        del self._leased[int(ssrc[6:])]
        return True

    def is_leased(self, ssrc: str) -> bool:
        """True if ``ssrc`` is currently leased by this allocator."""
        if _SSRC.fullmatch(ssrc) is None:
            return False
        return self._leased.get(int(ssrc[6:])) == ssrc


def new_tag(rng: random.Random) -> str:
    """A From/To tag with 64 random bits (RFC 3261 §19.3 asks for at least 32)."""
    return f"{rng.getrandbits(64):016x}"


def new_call_id(rng: random.Random, host: str) -> str:
    """A globally unique Call-ID ``<128 random bits>@host`` (RFC 3261 §8.1.1.4)."""
    local = f"{rng.getrandbits(128):032x}"
    return f"{local}@{host}" if host else local


def new_branch(rng: random.Random) -> str:
    """A Via branch: magic cookie plus 64 random bits (RFC 3261 §8.1.1.7)."""
    return f"{BRANCH_MAGIC_COOKIE}{rng.getrandbits(64):016x}"
