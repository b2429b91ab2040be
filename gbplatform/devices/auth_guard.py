"""Limits on digest guessing: back-off, then a ban, per source address and per device ID.

Theory of operation
-------------------
Without a limit, one source tried 3,000 wrong digests in 3.2 s and the right
one straight after was accepted. RFC 3261 §22 leaves rate limiting to the
implementation; this is ours.

Failed digest verifications (a wrong response, an unknown user; not a stale
nonce, not a REGISTER without credentials) are counted under two keys: the
source address (``address:<host>``, the port is the attacker's choice) and the
device ID the REGISTER is for (``device:<id>``). For each key:

* the first ``FREE_FAILURES`` failures cost nothing more than the 403;
* after that the key is backed off: credentials it sends within
  ``2 ** (failures - FREE_FAILURES)`` seconds of its last failure are refused
  with 403 without verifying them (no digest work), and count as failures;
* at ``max_failures`` failures the key is banned for ``ban_seconds``: every
  REGISTER it sends is answered 403 before anything else is looked at;
* a key quiet for ``ban_seconds`` is forgotten; a successful registration
  forgets the device's key (not the address's: an attacker owning one device
  must not be able to reset its address's count with it).

Bans are listed and lifted through the API (``/api/v1/security/bans``).
The table is bounded (``max_entries``): a flood from forged source addresses
evicts the oldest key that is not banned, so it costs bounded memory and
cannot evict a ban unless every entry is one.

Sans-IO: every call takes ``now`` (the reactor's seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FREE_FAILURES", "AuthGuard", "Ban", "Block"]

FREE_FAILURES = 2
# How far from the oldest end eviction looks for an entry that is not a ban.
_EVICT_SCAN = 64


@dataclass
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    banned_until: float | None = None
    banned_at: float = 0.0
    refused: int = 0  # requests refused without digest work while backed off or banned


@dataclass(frozen=True)
class Block:
    """Why a REGISTER is refused before its credentials are looked at."""

    key: str
    banned: bool  # False: backed off
    newly_banned: tuple[str, ...] = ()  # keys this refusal's failure count banned


@dataclass(frozen=True)
class Ban:
    """A banned key, for the API."""

    key: str
    kind: str  # "address" | "device"
    value: str
    failures: int
    refused: int
    banned_for: float  # seconds since the ban started
    remaining: float  # seconds until it lapses


def address_key(host: str) -> str:
    return f"address:{host}"


def device_key(device_id: str) -> str:
    return f"device:{device_id}"


class AuthGuard:
    """Counts failed digests per key; says which REGISTERs to refuse unverified."""

    def __init__(self, *, max_failures: int, ban_seconds: float, max_entries: int = 100_000) -> None:
        self.max_failures = max_failures  # 0: no limit
        self.ban_seconds = ban_seconds
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self.stats = {"failures": 0, "bans": 0, "refused_banned": 0, "refused_backoff": 0}

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def check(self, keys: list[str], now: float, *, has_credentials: bool) -> Block | None:
        """The first of ``keys`` that is banned (or, with credentials, backed off), else None.

        A refusal is counted (``refused``); one under back-off also counts as a
        failure, so a fast guesser reaches the ban without digest work.
        """
        if not self.enabled:
            return None
        for key in keys:
            entry = self._live_entry(key, now)
            if entry is None:
                continue
            if entry.banned_until is not None:
                entry.refused += 1
                self.stats["refused_banned"] += 1
                return Block(key, True)
        if not has_credentials:
            return None
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or entry.failures < FREE_FAILURES:
                continue
            wait = min(2.0 ** (entry.failures - FREE_FAILURES), self.ban_seconds)
            if now - entry.last_failure < wait:
                entry.refused += 1
                self.stats["refused_backoff"] += 1
                newly = tuple(self.failed(keys, now))
                return Block(key, key in newly, newly)
        return None

    def failed(self, keys: list[str], now: float) -> list[str]:
        """Count one failed digest under each key; return the keys banned by it."""
        if not self.enabled:
            return []
        banned: list[str] = []
        for key in keys:
            entry = self._live_entry(key, now)
            if entry is None:
                entry = self._new_entry(key)
            if entry.banned_until is not None:
                continue
            if self._count_failure(key, entry, now):
                banned.append(key)
        return banned

    def succeeded(self, key: str) -> None:
        """A registration succeeded: forget the failures counted under ``key``."""
        entry = self._entries.get(key)
        if entry is not None and entry.banned_until is None:
            del self._entries[key]

    def bans(self, now: float) -> list[Ban]:
        out: list[Ban] = []
        for key in list(self._entries):
            entry = self._live_entry(key, now)
            if entry is None or entry.banned_until is None:
                continue
            kind, _, value = key.partition(":")
            out.append(Ban(key, kind, value, entry.failures, entry.refused,
                           max(0.0, now - entry.banned_at), max(0.0, entry.banned_until - now)))
        return out

    def clear(self, key: str) -> bool:
        """Lift the ban on ``key`` and forget its failures; False if it was not banned."""
        entry = self._entries.get(key)
        if entry is None or entry.banned_until is None:
            return False
        del self._entries[key]
        return True

    def clear_all(self) -> int:
        keys = [k for k, e in self._entries.items() if e.banned_until is not None]
        for key in keys:
            del self._entries[key]
        return len(keys)

    @property
    def size(self) -> int:
        return len(self._entries)

    # -- internals -------------------------------------------------------------
    def _count_failure(self, key: str, entry: _Entry, now: float) -> bool:
        self.stats["failures"] += 1
        entry.failures += 1
        entry.last_failure = now
        if entry.failures >= self.max_failures:
            entry.banned_until = now + self.ban_seconds
            entry.banned_at = now
            self.stats["bans"] += 1
            return True
        return False

    def _live_entry(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.banned_until is not None:
            expired = now >= entry.banned_until
        else:
            expired = now - entry.last_failure >= self.ban_seconds
        if expired:
            del self._entries[key]
            return None
        return entry

    def _new_entry(self, key: str) -> _Entry:
        if len(self._entries) >= self.max_entries:
            victim = None
            for i, (k, e) in enumerate(self._entries.items()):
                if e.banned_until is None:
                    victim = k
                    break
                if i >= _EVICT_SCAN:
                    break
            del self._entries[victim if victim is not None else next(iter(self._entries))]
        entry = _Entry()
        self._entries[key] = entry
        return entry
