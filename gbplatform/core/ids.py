"""GB/T 28181 identifiers, SSRC allocation and SIP random tokens.

Theory of operation
-------------------
The rules of the 20-digit GB/T 28181 codes (GB/T 28181-2016 Annex D) live in
:mod:`sip.gbid`, because the sans-IO SIP core needs them and cannot import
the application; they are re-exported here so that the application has one
place to import ID helpers from.

The SSRC carried in the SDP ``y=`` line is ten decimal digits (GB/T 28181-2016
Annex F): the first is 0 for live video and 1 for history (playback/download),
the next five are digits 4-8 of the SIP domain, the last four a sequence number.
``SsrcAllocator`` hands out those sequences so that no two live leases share
one, which is what lets a single-port RTP receiver demultiplex by SSRC.

Every random token takes an explicit ``random.Random`` so tests can seed it.
"""

import random
import re

from sip.gbid import domain_of, gb_id_type, id_kind, is_civil_code, is_domain, is_gb_id

__all__ = [
    "SsrcAllocator",
    "SsrcExhaustedError",
    "domain_of",
    "gb_id_type",
    "id_kind",
    "is_civil_code",
    "is_domain",
    "is_gb_id",
    "new_branch",
    "new_call_id",
    "new_tag",
]

_SSRC = re.compile(r"[01][0-9]{9}")

#: RFC 3261 §8.1.1.7: a branch starting with this cookie marks an RFC 3261 client.
BRANCH_MAGIC_COOKIE = "z9hG4bK"

_SEQUENCES = 10_000


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
        if not is_domain(domain):
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
