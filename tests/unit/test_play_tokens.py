"""Playback tokens (issue 8 item 4): signed, expiring, scoped to one channel and kind."""

from __future__ import annotations

import pytest

from gbplatform.auth.play_tokens import LIVE, VOD, PlayTokens
from gbplatform.core.clock import FakeClock

ADMIN = "admin-token"
CH = "34020000001310000001"
OTHER = "34020000001310000002"


def tokens(clock: FakeClock, ttl: float = 3600.0) -> PlayTokens:
    return PlayTokens.from_api_token(ADMIN, clock, ttl=ttl)


def test_a_token_opens_its_channel_until_it_expires() -> None:
    clock = FakeClock()
    t = tokens(clock)
    token = t.issue(LIVE, CH)
    assert t.verify(token, LIVE, CH)
    clock.advance(3599.0)
    assert t.verify(token, LIVE, CH)
    clock.advance(1.0)
    assert not t.verify(token, LIVE, CH)


def test_a_token_is_url_safe_and_never_the_admin_token() -> None:
    token = tokens(FakeClock()).issue(LIVE, CH)
    assert ADMIN not in token and CH not in token
    assert all(c.isalnum() or c in "-_." for c in token)


def test_wrong_channel_or_kind_is_refused() -> None:
    t = tokens(FakeClock())
    live, vod = t.issue(LIVE, CH), t.issue(VOD, CH)
    assert not t.verify(live, LIVE, OTHER)
    assert not t.verify(live, VOD, CH)  # live viewing does not open the recordings
    assert t.verify(vod, VOD, CH) and not t.verify(vod, LIVE, CH) and not t.verify(vod, VOD, OTHER)


def test_a_tampered_token_is_refused() -> None:
    clock = FakeClock()
    t = tokens(clock)
    token = t.issue(LIVE, CH)
    scope, expires, mac = token.split(".")
    later = str(int(expires) + 10_000)
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for bad in (f"{scope}.{later}.{mac}", f"{scope}.{expires}.{flipped}", f"v.{expires}.{mac}", "",
                "garbage", "l.x.y", f"{scope}.{expires}", f"{token}.x", ADMIN, "l.-1." + mac,
                "l.99999999999999999999999999." + mac):
        assert not t.verify(bad, LIVE, CH), bad


def test_another_secret_refuses_it() -> None:
    clock = FakeClock()
    token = tokens(clock).issue(LIVE, CH)
    assert not PlayTokens.from_api_token("rotated", clock, ttl=3600.0).verify(token, LIVE, CH)
    assert PlayTokens.from_api_token(ADMIN, clock, ttl=60.0).verify(token, LIVE, CH)  # another node, same secret


def test_an_empty_api_token_issues_nothing_that_verifies() -> None:
    t = PlayTokens.from_api_token("", FakeClock(), ttl=60.0)
    assert not t.verify(t.issue(LIVE, CH), LIVE, CH)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ttl"):
        PlayTokens.from_api_token(ADMIN, FakeClock(), ttl=0.0)
    with pytest.raises(ValueError, match="scope"):
        tokens(FakeClock()).issue("record", CH)
