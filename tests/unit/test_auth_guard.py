"""Digest guessing limits (issue 8 item 2) and throttled refusal logs (item 9).

The registrar counts failed digests per source address and per device ID,
backs off, then bans for ``sip.auth_ban_seconds``; banned REGISTERs are
answered 403 without digest work. Repeated refusals are logged once per
interval with a count.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from gbplatform.devices.auth_guard import AuthGuard
from media.logthrottle import LogThrottle
from tests.unit.platform_harness import DEV, DEV2, Harness

ATTACKER = ("UDP", "192.0.2.66", 5099)
_seeds = itertools.count(100)


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """Text of every log line the registrar and the SIP dispatch write during the test."""
    seen: list[str] = []

    def observe(event: LogEvent) -> None:
        namespace = event.get("log_namespace")
        if namespace in ("gbplatform.devices.registrar", "gbplatform.signalling.router"):
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def guess(h: Harness, n: int, *, device_id: str = DEV, addr: Any = ATTACKER) -> list[int]:
    """``n`` wrong digests, each answering a fresh challenge; the final statuses."""
    dev = h.device(device_id, addr, seed=next(_seeds))  # a fresh Call-ID: no retransmission
    return [dev.register_auth(password=f"guess{i}").status for i in range(n)]


# --- the registrar ------------------------------------------------------------


def test_many_wrong_digests_ban_the_source_and_the_right_password_is_refused(
    make: Callable[..., Harness],
) -> None:
    h = make(auth_max_failures=5, auth_ban_seconds=600)
    assert set(guess(h, 50)) == {403}
    verified: list[str] = []
    real_verify = h.devices.digest.verify

    def counting(*args: Any, **kwargs: Any) -> Any:
        verified.append("x")
        return real_verify(*args, **kwargs)

    h.devices.digest.verify = counting  # type: ignore[method-assign]
    dev = h.device(DEV, ATTACKER, seed=8)
    resp = dev.register_auth()
    assert resp.status == 403 and resp.reason == "Too Many Failures"
    assert verified == []  # refused without digest work
    keys = {b.key for b in h.devices.guard.bans(h.clock.seconds())}
    assert keys == {"address:192.0.2.66", f"device:{DEV}"}
    assert h.devices.guard.stats["bans"] == 2


def test_a_ban_on_the_device_id_holds_from_any_address_until_cleared(make: Callable[..., Harness]) -> None:
    h = make(auth_max_failures=5, auth_ban_seconds=600)
    guess(h, 20)
    honest = h.device(DEV, ("UDP", "127.0.0.1", 5070))
    assert honest.register_auth().status == 403
    assert h.devices.guard.clear(f"device:{DEV}")
    assert honest.register_auth().status == 200
    # The attacker's address stays banned, whatever device it claims.
    assert h.device(DEV2, ATTACKER, seed=3).register_auth().status == 403


def test_a_ban_lapses_after_auth_ban_seconds(make: Callable[..., Harness]) -> None:
    h = make(auth_max_failures=5, auth_ban_seconds=60)
    guess(h, 10)
    h.advance(61)
    assert h.devices.guard.bans(h.clock.seconds()) == []
    assert h.device(DEV, ATTACKER, seed=8).register_auth().status == 200


def test_a_few_typos_cost_nothing_and_success_forgets_the_device_count(make: Callable[..., Harness]) -> None:
    h = make(auth_max_failures=5, auth_ban_seconds=600)
    dev = h.device()
    for _ in range(3):
        assert dev.register_auth(password="typo").status == 403
        h.advance(10)  # past the back-off
    assert dev.register_auth().status == 200
    assert h.devices.guard.bans(h.clock.seconds()) == []


def test_back_off_refuses_fast_retries_without_verifying_them(make: Callable[..., Harness]) -> None:
    h = make(auth_max_failures=10, auth_ban_seconds=600)
    dev = h.device()
    assert [dev.register_auth(password="x").status for _ in range(2)] == [403, 403]
    before = h.devices.guard.stats["refused_backoff"]
    assert dev.register_auth().status == 403  # the right password, but too soon
    assert h.devices.guard.stats["refused_backoff"] == before + 1
    h.advance(2)
    assert dev.register_auth().status == 200


def test_an_address_ban_spares_devices_online_from_it(make: Callable[..., Harness]) -> None:
    """Many cameras share a site's NAT address: one guesser there must not
    take the registered ones offline."""
    h = make(auth_max_failures=5, auth_ban_seconds=600)
    online = h.registered_device(DEV2, ("UDP", "192.0.2.66", 5070))
    guess(h, 10)  # from 192.0.2.66:5099
    assert "address:192.0.2.66" in {b.key for b in h.devices.guard.bans(h.clock.seconds())}
    assert online.register_auth().status == 200


def test_zero_max_failures_turns_the_limit_off(make: Callable[..., Harness]) -> None:
    h = make(auth_max_failures=0)
    guess(h, 30)
    assert h.device(DEV, ATTACKER, seed=8).register_auth().status == 200


def test_banned_requests_are_logged_once_per_interval_with_a_count(
    make: Callable[..., Harness], lines: list[str]
) -> None:
    h = make(auth_max_failures=5, auth_ban_seconds=600)
    guess(h, 5)
    assert any("address:192.0.2.66 banned for 600 s" in line for line in lines), lines
    h.advance(11)
    lines.clear()
    guess(h, 200)  # banned: refused before any challenge
    assert len(lines) == 1 and "is banned" in lines[0], lines
    h.advance(11)
    guess(h, 1)
    assert len(lines) == 2 and "(200 times since the last such line)" in lines[1], lines


def test_rejected_registers_are_logged_once_per_interval_with_a_count(
    make: Callable[..., Harness], lines: list[str]
) -> None:
    """20k forged REGISTERs/s wrote two info lines each (issue 8 item 9)."""
    h = make(auth_max_failures=0)
    bad = h.device("not-a-gb-id", ATTACKER, seed=5)
    for _ in range(300):
        assert bad.register().status == 403
    assert len(lines) <= 2, lines
    h.advance(11)
    bad.register()
    assert len(lines) <= 3 and "300 times" in lines[-1], lines
    wrong = h.device(DEV, ATTACKER, seed=6)
    for _ in range(100):
        wrong.register_auth(password="nope")
    assert len(lines) <= 5, lines


# --- the parts alone -------------------------------------------------------------


def test_log_throttle_first_then_once_per_interval_with_the_count() -> None:
    t = LogThrottle(10.0)
    assert t.hit("k", 0.0) == 1
    assert [t.hit("k", 0.1 * i) for i in range(1, 50)] == [0] * 49
    assert t.pending("k") == 49
    assert t.hit("k", 10.0) == 50
    assert t.hit("other", 10.0) == 1
    assert t.hit("k", 5.0) == 1  # the clock went back: log rather than stay quiet


def test_log_throttle_bounds_its_keys() -> None:
    t = LogThrottle(10.0, max_keys=3)
    for i in range(1000):
        t.hit(i, 0.0)
    assert len(t._kinds) == 3


def test_guard_table_is_bounded_and_keeps_bans() -> None:
    g = AuthGuard(max_failures=3, ban_seconds=600, max_entries=100)
    g.failed(["address:10.0.0.1"], 0.0)
    g.failed(["address:10.0.0.1"], 0.0)
    assert g.failed(["address:10.0.0.1"], 0.0) == ["address:10.0.0.1"]
    for i in range(10_000):
        g.failed([f"address:10.1.{i // 256}.{i % 256}"], 1.0)
    assert g.size <= 100
    assert [b.key for b in g.bans(2.0)] == ["address:10.0.0.1"]
    assert g.check(["address:10.0.0.1"], 2.0, has_credentials=False) is not None
    assert g.clear("address:10.0.0.1") and not g.clear("address:10.0.0.1")


# --- the API ---------------------------------------------------------------------------


def test_bans_are_listed_and_lifted_through_the_api() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform import __version__
    from gbplatform.api.app import Api
    from gbplatform.api.openapi import build_openapi
    from tests.unit.test_api import Client, make_platform

    platform, clock = make_platform()
    client = Client(Api(platform))
    guard = platform.devices.guard
    for _ in range(guard.max_failures):
        guard.failed(["address:192.0.2.66"], clock.seconds())
    clock.advance(5)
    reply = client("GET", "/security/bans")
    assert reply.code == 200
    doc = build_openapi(__version__)
    jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/BanList", "components": doc["components"]}
    ).validate(reply.json)
    [ban] = reply.json["items"]
    assert ban["key"] == "address:192.0.2.66" and ban["kind"] == "address" and ban["failures"] == 10
    assert ban["since"] == "2023-11-14T22:13:20.000Z" and ban["until"] == "2023-11-14T22:23:20.000Z"
    assert client("GET", "/security/bans", token=None).code == 401
    assert client("DELETE", "/security/bans/address:192.0.2.66").code == 204
    assert client("DELETE", "/security/bans/address:192.0.2.66").code == 404
    assert client("GET", "/security/bans").json["items"] == []
    platform.db.engine.dispose()


# --- memory a flood can take (issue 8 item 10) ---------------------------------------------


def test_the_transaction_table_bound_is_configurable_and_answers_503(make: Callable[..., Harness]) -> None:
    h = make(max_transactions=100)
    assert h.platform.endpoint.max_transactions == 100
    # Challenges keep no transaction (answered statelessly): they never fill the table.
    answers = [h.device(f"3402000000132000{i:04d}", ("UDP", "192.0.2.7", 6000 + i)).register().status
               for i in range(102)]
    assert answers == [401] * 102 and h.platform.endpoint.transaction_count == 0
    # Registrations keep theirs for timer J (and the queries that follow them their own).
    statuses: list[int] = []
    for i in range(100):
        statuses.append(h.device(f"3402000000132001{i:04d}", ("UDP", "192.0.2.8", 6000 + i)).register_auth().status)
        if statuses[-1] == 503:
            break
    assert statuses[-1] == 503 and set(statuses[:-1]) == {200}
    assert h.platform.endpoint.transaction_count >= 100


def test_a_flood_of_unknown_device_ids_is_not_cached(make: Callable[..., Harness]) -> None:
    """After the preload, an unknown ID costs no lookup, so remembering it
    only fills memory: 20k forged IDs a second would fill the cache."""
    h = make(register_policy="pre_added", auth_max_failures=0)
    h.devices._preloaded = True
    before = len(h.devices.auth_cache)
    for i in range(300):
        h.device(f"3402000000132{i:07d}", ATTACKER, seed=next(_seeds)).register()
    assert len(h.devices.auth_cache) == before
