"""The one clock application code is given.

Application services never import ``twisted.internet.reactor`` or call
``time.time()`` themselves: they receive a ``Clock``.  In production that is
``ReactorClock(reactor)``; in tests it is ``FakeClock``, which steps both the
reactor time used for timers and the wall clock used for timestamps.

Two notions of time are kept apart on purpose: ``seconds()`` drives timers and
expiry (REGISTER expiry, keepalive timeouts, query timeouts) and follows the
reactor; ``time()`` is epoch seconds for values that leave the process (database
timestamps, the SIP ``Date`` header of GB/T 28181-2016 §9.1.2.1, API output).
"""

import datetime as _dt
import time as _time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.task import Clock as _TwistedClock

__all__ = ["Clock", "DelayedCallLike", "FakeClock", "ReactorClock", "utc_datetime"]


class DelayedCallLike(Protocol):
    """What ``call_later`` returns: the part of ``IDelayedCall`` callers use."""

    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class Clock(Protocol):
    """Time source injected into application services."""

    def seconds(self) -> float:
        """Reactor time, for timers and intervals."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds, for timestamps."""
        ...

    def call_later(
        self, delay: float, f: Callable[..., object], *args: object
    ) -> DelayedCallLike:
        """Call ``f(*args)`` after ``delay`` seconds of reactor time."""
        ...


class _ReactorTime(Protocol):
    """The two methods of ``twisted.internet.interfaces.IReactorTime`` we use."""

    def seconds(self) -> float: ...

    def callLater(  # noqa: N802 - Twisted's name
        self, delay: float, callable: Callable[..., object], *args: object
    ) -> DelayedCallLike: ...


class ReactorClock:
    """``Clock`` over a real reactor's ``IReactorTime``."""

    def __init__(
        self, reactor: _ReactorTime, wall: Callable[[], float] = _time.time
    ) -> None:
        self._reactor = reactor
        self._wall = wall

    def seconds(self) -> float:
        return float(self._reactor.seconds())

    def time(self) -> float:
        return self._wall()

    def call_later(
        self, delay: float, f: Callable[..., object], *args: object
    ) -> DelayedCallLike:
        return self._reactor.callLater(delay, f, *args)


class FakeClock:
    """Deterministic ``Clock`` for tests, built on ``twisted.internet.task.Clock``.

    ``reactor`` is the underlying ``task.Clock``: pass it wherever an
    ``IReactorTime`` is needed (e.g. a transport adapter) so that one
    ``advance()`` steps everything.
    """

    #: 2023-11-14T22:13:20Z: a fixed, realistic wall clock for timestamps.
    DEFAULT_WALL_START = 1_700_000_000.0

    def __init__(self, start: float = 0.0, wall_start: float = DEFAULT_WALL_START) -> None:
        self.reactor = _TwistedClock()
        if start:
            self.reactor.advance(start)
        self._wall_offset = wall_start - start

    def seconds(self) -> float:
        return float(self.reactor.seconds())

    def time(self) -> float:
        return self.reactor.seconds() + self._wall_offset

    def set_time(self, epoch: float) -> None:
        """Jump the wall clock (e.g. an NTP step) without moving reactor time."""
        self._wall_offset = epoch - self.reactor.seconds()

    def call_later(
        self, delay: float, f: Callable[..., object], *args: object
    ) -> DelayedCallLike:
        return self.reactor.callLater(delay, f, *args)

    def advance(self, dt: float) -> None:
        """Step reactor and wall time by ``dt`` and run the calls that fell due."""
        self.reactor.advance(dt)

    def pump(self, timings: list[float]) -> None:
        """Advance by each step in turn, running due calls after every step."""
        self.reactor.pump(timings)

    def pending(self) -> int:
        """Number of scheduled calls still active."""
        calls: list[Any] = list(self.reactor.getDelayedCalls())
        return len([call for call in calls if call.active()])


def utc_datetime(epoch: float) -> _dt.datetime:
    """An epoch from ``Clock.time()`` as the timezone-aware UTC datetime the registry stores."""
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC)
