"""Playback tokens: what the media URLs handed to players carry instead of the API token.

Theory of operation: ``POST /api/v1/channels/{id}/play`` (and the recording
timeline) answer URLs that a player opens as given (ffplay, VLC, an HTML
``<video>``), so the credential has to ride in the URL (RFC 6750 §2.3): the
URL ends up in players' histories, web pages and proxies' logs. The admin
API token must never be that credential. A playback token is instead:

    <scope>.<expires>.<mac>

* ``scope`` is ``l`` (the channel's live media: RTSP ``/live/``, HTTP-FLV,
  HLS, snapshot) or ``v`` (the channel's recordings: RTSP ``/vod/``, HLS VOD,
  MP4 download);
* ``expires`` is the wall-clock epoch second after which it is refused (wall
  time: another node of the platform may check it);
* ``mac`` is HMAC-SHA256 (RFC 2104) over scope, channel ID and expiry,
  truncated to 128 bits (RFC 2104 §5 allows truncation to no less than half
  the hash) and base64url-encoded without padding (RFC 4648 §5).

The channel ID is not in the token but in the URL it is checked against: a
token issued for channel A, presented on channel B's URL, MACs other bytes.
Everything is URL-safe, so URLs need no percent-encoding.

The key is derived from the API token with HMAC, never the API token itself:
every node sharing the API token accepts every node's playback URLs, and
rotating the API token revokes all of them. A token is checked when a request
arrives (every RTSP request, every HTTP request, every HLS playlist reload and
segment); a stream already flowing is not cut when its token expires.

No I/O: the clock is injected (``Clock.time()``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Protocol

__all__ = ["LIVE", "VOD", "PlayTokens"]

LIVE = "live"
VOD = "vod"
_SCOPE_CODES = {LIVE: "l", VOD: "v"}
_KEY_LABEL = b"gbplatform playback token key v1"
_MAC_BYTES = 16
_MAX_DIGITS = 12  # epoch seconds up to year 33658: a bound on what int() is given


class WallClock(Protocol):
    def time(self) -> float: ...


def _mac(key: bytes, code: str, channel_id: str, expires: int) -> str:
    msg = f"{code}\n{channel_id}\n{expires}".encode()
    digest = hmac.new(key, msg, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class PlayTokens:
    """Issue and check playback tokens; see the module docstring."""

    def __init__(self, key: bytes, clock: WallClock, *, ttl: float) -> None:
        if not ttl > 0:
            raise ValueError(f"playback token ttl must be > 0 seconds, got {ttl!r}")
        self._key = key
        self.clock = clock
        self.ttl = ttl

    @classmethod
    def from_api_token(cls, api_token: str, clock: WallClock, *, ttl: float) -> PlayTokens:
        """Keyed by HMAC-SHA256(API token, label); an empty API token gives a key that verifies nothing."""
        key = hmac.new(api_token.encode(), _KEY_LABEL, hashlib.sha256).digest() if api_token else b""
        return cls(key, clock, ttl=ttl)

    def expires_at(self) -> int:
        """When a token issued now stops working (epoch seconds)."""
        return int(self.clock.time() + self.ttl)

    def issue(self, scope: str, channel_id: str) -> str:
        """A token for ``scope`` (``LIVE`` or ``VOD``) of ``channel_id``, valid for ``ttl`` seconds."""
        code = _SCOPE_CODES.get(scope)
        if code is None:
            raise ValueError(f"unknown playback token scope {scope!r}")
        expires = self.expires_at()
        return f"{code}.{expires}.{_mac(self._key, code, channel_id, expires)}"

    def verify(self, token: str, scope: str, channel_id: str) -> bool:
        """True if ``token`` was issued for ``scope`` of ``channel_id`` and has not expired."""
        code = _SCOPE_CODES.get(scope)
        parts = token.split(".")
        if not self._key or code is None or len(parts) != 3:
            return False
        given_code, expires_s, mac = parts
        if given_code != code or not expires_s.isascii() or not expires_s.isdigit() or len(expires_s) > _MAX_DIGITS:
            return False
        expires = int(expires_s)
        # compare_digest: how much of a forged MAC is right does not show in the timing.
        if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(self._key, code, channel_id, expires).encode()):
            return False
        return self.clock.time() < expires
