"""Onboarding under overload (issue 12): the adaptive limit on queries in flight (AIMD on the
reactor's lateness, stepped clock), and a query that timed out asked once more."""

from __future__ import annotations

from typing import Any

from gbplatform.core.clock import FakeClock
from gbplatform.devices.onboarding import AdaptiveLimit
from sip import manscdp
from tests.unit.platform_harness import DEV, Harness
from tests.unit.test_onboarding import silent_devices

TICK = AdaptiveLimit.TICK


class Limited:
    """An ``AdaptiveLimit`` on a stepped clock, with switches for its inputs."""

    def __init__(self, ceiling: int = 600, max_lag: float = 0.25) -> None:
        self.clock = FakeClock()
        self.wanted = True
        self.pressure = False
        self.active = True
        self.raised = 0
        self.limit = AdaptiveLimit(self.clock, ceiling=ceiling, max_lag=max_lag, active=lambda: self.active,
                                   wanted=lambda: self.wanted, pressure=lambda: self.pressure,
                                   on_raise=self._raised)
        self.limit.start()

    def _raised(self) -> None:
        self.raised += 1

    def period(self, lag: float = 0.0) -> None:
        """One control period; one tick in it runs ``lag`` seconds late (the reactor was busy)."""
        done = self.limit.stats["periods"]
        if lag:
            self.clock.reactor.advance(TICK + lag)
        while self.limit.stats["periods"] == done:
            self.clock.reactor.advance(TICK)

    def on_time(self, seconds: float) -> None:
        """Periods where every tick runs when due: a reactor that keeps up."""
        for _ in range(round(seconds / AdaptiveLimit.PERIOD)):
            self.period()

    def late(self, lag: float) -> None:
        self.period(lag)


def test_lag_shrinks_the_limit_multiplicatively_down_to_the_floor() -> None:
    t = Limited()
    assert t.limit.limit == 600 and t.limit.floor == 30
    t.late(0.4)
    assert t.limit.limit == 420 and t.limit.lag >= 0.4 and t.limit.stats["decreases"] == 1
    t.late(0.4)
    assert t.limit.limit == 294
    for _ in range(20):
        t.late(1.0)
    assert t.limit.limit == 30  # the floor: some onboarding goes on, whatever the load


def test_recovery_grows_the_limit_additively_up_to_the_ceiling() -> None:
    t = Limited()
    for _ in range(3):
        t.late(0.5)
    assert t.limit.limit == 205
    t.on_time(1.0)
    assert t.limit.limit == 217 and t.raised == 1  # + a fiftieth of the ceiling per good period
    t.on_time(40.0)
    assert t.limit.limit == 600 and t.limit.stats["increases"] == 33  # never above the ceiling


def test_lag_between_half_and_whole_max_lag_holds_the_limit() -> None:
    t = Limited()
    t.late(0.5)
    assert t.limit.limit == 420
    for _ in range(5):
        t.late(0.2)  # under 0.25 s but over half of it
    assert t.limit.limit == 420


def test_no_growth_while_no_device_waits() -> None:
    t = Limited()
    t.late(0.5)
    t.wanted = False
    t.on_time(10.0)
    assert t.limit.limit == 420 and t.raised == 0


def test_a_registry_that_falls_behind_shrinks_the_limit_without_lag() -> None:
    t = Limited()
    t.pressure = True
    t.on_time(2.0)
    assert t.limit.limit == 294
    t.pressure = False
    t.on_time(1.0)
    assert t.limit.limit == 306


def test_measuring_stops_when_onboarding_is_idle_and_restarts() -> None:
    t = Limited()
    t.active = False
    t.clock.reactor.advance(TICK)
    assert not t.limit.running and t.clock.reactor.getDelayedCalls() == []
    t.active = True
    t.limit.start()
    assert t.limit.running
    t.limit.start()  # idempotent
    assert len(t.clock.reactor.getDelayedCalls()) == 1


def test_max_lag_zero_turns_adaptation_off() -> None:
    t = Limited(max_lag=0)
    assert not t.limit.running and t.clock.reactor.getDelayedCalls() == []
    assert t.limit.limit == 600


def test_a_small_ceiling_keeps_floor_and_step_at_one_device() -> None:
    t = Limited(ceiling=6)
    assert (t.limit.floor, t.limit.step) == (3, 3)
    t.late(1.0)
    assert t.limit.limit == 4  # int(6 * 0.7); with 3 queries a device, one device at a time
    t.late(1.0)
    assert t.limit.limit == 3


# --- through the platform -------------------------------------------------------------


def test_the_platform_starts_fewer_devices_while_the_reactor_is_late(h: Harness) -> None:
    queries = h.platform.queries
    assert queries.limit == h.config.sip.onboarding_queries
    silent_devices(h, 2)
    assert queries.limiter.running
    h.clock.reactor.advance(TICK + 0.5)  # the reactor was busy for half a second
    h.advance(1.0)
    assert queries.limit == int(h.config.sip.onboarding_queries * AdaptiveLimit.DECREASE)
    from gbplatform.api.app import Api
    from tests.unit.test_api import Client

    health = Client(Api(h.platform))("GET", "/health").json
    assert health["sip"]["onboarding_limit"] == queries.limit
    h.advance(100)  # every query ended: no timer left running for onboarding
    assert queries.in_flight == 0 and not queries.limiter.running


def test_a_query_that_timed_out_is_asked_once_more_and_its_answer_stored(h: Harness) -> None:
    dev = h.registered_device()
    queries = h.platform.queries
    first = dev.last_query("DeviceInfo")
    h.advance(h.config.sip.query_timeout + 0.1)
    again = dev.last_query("DeviceInfo")
    assert again.sn != first.sn and len(dev.queries("DeviceInfo")) == 2
    assert queries.retrying == 2 and queries.stats["retried"] == 2  # DeviceInfo and ConfigDownload
    # The first ask's slot is free already; the retries still count as in flight (health).
    assert queries.slots == 1 and queries.in_flight == 3
    dev.message(manscdp.encode_device_info_response(again.sn, DEV, device_name="Late", manufacturer="Dahua"))
    h.advance(1)
    assert h.record().manufacturer == "Dahua"
    assert queries.stats["retry_answered"] == 1
    h.advance(100)
    assert len(dev.queries("ConfigDownload")) == 2  # asked twice, then given up
    assert (queries.retrying, queries.slots, queries.in_flight) == (0, 0, 0)


def test_a_device_gone_offline_is_not_asked_again(h: Harness) -> None:
    dev = h.registered_device()
    assert dev.register_auth(expires=0).status == 200  # unregistered before its answers came
    h.advance(h.config.sip.query_timeout + 0.1)
    assert len(dev.queries("DeviceInfo")) == 1 and h.platform.queries.stats["retried"] == 0


def test_a_silent_device_holds_no_slot_while_asked_again(h: Harness) -> None:
    queries: Any = h.platform.queries
    queries.concurrency = 3  # one device at a time
    silent = silent_devices(h, 2)
    assert [len(d.queries()) for d in silent] == [3, 0]
    h.advance(h.config.sip.catalog_timeout + 0.1)
    # The first device's Catalog ended at 30 s; its DeviceInfo and ConfigDownload retries (10-20 s) held no slot,
    # so the second was asked then, not after the retries.
    assert [len(d.queries()) for d in silent] == [5, 3]


def test_a_burst_of_starts_is_spread_over_reactor_turns(h: Harness) -> None:
    """Raising the limit with many devices queued starts START_PER_TURN of them, the rest on later turns."""
    from gbplatform.devices.onboarding import START_PER_TURN

    queries = h.platform.queries
    queries.concurrency = 3
    devices = silent_devices(h, 2 * START_PER_TURN + 11)
    assert queries.backlog == 2 * START_PER_TURN + 10
    queries.concurrency = 1500
    assert queries.backlog == START_PER_TURN + 10
    assert len(h.clock.reactor.getDelayedCalls()) >= 1  # the rest: on a later turn (call_later(0))
    h.clock.reactor.advance(0)  # task.Clock runs the turns one after another
    h.pump()
    assert queries.backlog == 0 and all(len(d.queries()) == 3 for d in devices)


def test_slow_answers_shrink_the_limit_though_the_reactor_is_on_time() -> None:
    """A CPU-starved platform's socket queues answers for seconds while its timers still run on time."""
    t = Limited()
    for _ in range(6):
        t.limit.answered(3.0)
    for _ in range(4):
        t.limit.answered(0.05)
    t.period()
    assert t.limit.limit == 420
    for _ in range(AdaptiveLimit.MIN_ANSWERS - 1):
        t.limit.answered(10.0)  # too few to shrink it, too slow to grow it
    t.period()
    assert t.limit.limit == 420
    t.period()  # no answers at all: the reactor's lag decides
    assert t.limit.limit == 432


def test_some_slow_answers_hold_the_limit() -> None:
    t = Limited()
    t.late(0.5)
    for _ in range(3):
        t.limit.answered(3.0)
    for _ in range(7):
        t.limit.answered(0.05)
    t.period()
    assert t.limit.limit == 420  # 30 % slow: neither more nor less
    for _ in range(10):
        t.limit.answered(0.05)
    t.period()
    assert t.limit.limit == 432


def test_answer_delays_and_timeouts_reach_the_limit(h: Harness) -> None:
    queries = h.platform.queries
    dev = h.registered_device()
    seen: list[float] = []
    queries.limiter.answered = seen.append  # type: ignore[method-assign]
    info = dev.last_query("DeviceInfo")
    h.advance(0.5)
    dev.message(manscdp.encode_device_info_response(info.sn, DEV, manufacturer="Hikvision"))
    h.advance(h.config.sip.query_timeout)  # ConfigDownload unanswered: counted at its timeout
    assert seen[0] == 0.5 and seen[1] >= h.config.sip.query_timeout


def test_the_catalog_slot_comes_free_before_its_store_commits(h: Harness) -> None:
    from twisted.internet.defer import Deferred

    queries = h.platform.queries
    dev = h.registered_device()
    held: Deferred[Any] = Deferred()
    h.platform.catalog.stores.submit = lambda store: held  # type: ignore[method-assign]
    cat = dev.last_query("Catalog")
    dev.message(manscdp.encode_catalog_response(cat.sn, DEV, 0, []))
    h.pump()
    assert queries.slots == 2  # DeviceInfo and ConfigDownload still wait; the Catalog's slot is free
    assert not h.platform.catalog.sessions[DEV].done.called  # its store has not committed
