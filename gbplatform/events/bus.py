"""``EventBus``: one place every part of the platform publishes what happened.

Theory of operation
-------------------
A service calls ``publish(kind, device_id=..., channel_id=..., **data)``; the
bus numbers the event (``id``, strictly increasing for the process's life),
stamps it with the wall clock, keeps it in a bounded backlog and hands it to
every listener at once, on the reactor thread. Listeners are the consumers:
the ``GET /api/v1/events`` stream (one per connected client), the webhooks,
cascade later. A listener must not block: it queues what it cannot write
now, and a listener that raises is logged and kept.

Ids increase across restarts too (``run_first_id``). The backlog lets a client that reconnects with ``Last-Event-ID`` get what it
missed (``since``); past the backlog's bound the oldest events are gone and
``since`` says so (``None``), so the client knows it must resynchronise from
the API instead of silently missing events.

Kinds (``EVENT_KINDS``): ``alarm``, ``device`` (registered, online, offline),
``channel`` (catalog changes, on/off), ``position``, ``stream`` (started,
ended), ``record`` (segment closed, errors), ``subscription``, ``upgrade``,
``snapshot``, ``ptz`` (a 2022 device's PTZPosition). Every event's data names ``device_id`` and ``channel_id``
(``None`` when it concerns the device as a whole).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from twisted.logger import Logger

from gbplatform.core.clock import Clock

__all__ = ["EVENT_KINDS", "Event", "EventBus", "Listener", "run_first_id"]

log = Logger()

EVENT_KINDS: Final = ("alarm", "device", "channel", "position", "stream", "record", "subscription", "upgrade",
                      "snapshot", "ptz")

_encoder = msgspec.json.Encoder()
_ENVELOPE: Final = frozenset({"id", "type", "time"})


@dataclass(frozen=True)
class Event:
    """One thing that happened: its number, kind, wall time and data (``device_id``, ``channel_id``, ...)."""

    id: int
    kind: str
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def device_id(self) -> str | None:
        value = self.data.get("device_id")
        return value if isinstance(value, str) else None

    @property
    def channel_id(self) -> str | None:
        value = self.data.get("channel_id")
        return value if isinstance(value, str) else None

    def json(self) -> bytes:
        """The event as one JSON object: ``id``, ``type``, ``time`` (epoch seconds) and its data.

        The envelope's three keys are the event's: a data key of the same name (an alarm's own ``id``,
        ``type`` and ``time``) is sent as ``<kind>_<key>`` (``alarm_id``...), never over them.
        """
        body: dict[str, Any] = {"id": self.id, "type": self.kind, "time": self.time}
        for key, value in self.data.items():
            body[f"{self.kind}_{key}" if key in _ENVELOPE else key] = value
        return _encoder.encode(body)


Listener = Callable[[Event], None]


def run_first_id(clock: Clock) -> int:
    """The first event id of a process: its start in microseconds of wall time.

    A client reconnecting after a platform restart sends an id of the previous run; ids that restart
    at 1 would soon pass it and its ``Last-Event-ID`` would silently skip this run's first events.
    Starting each run at its start time keeps ids increasing across restarts (a run publishes fewer
    than a million events a second) and below 2**53, exact in JavaScript, until the year 2255.
    """
    return max(1, int(clock.time() * 1_000_000))


class EventBus:
    """Numbers, keeps (bounded) and fans out events; see the module docstring."""

    def __init__(self, clock: Clock, *, backlog: int = 1000, first_id: int = 1) -> None:
        if backlog < 1:
            raise ValueError("backlog must be at least 1")
        if first_id < 1:
            raise ValueError("first_id must be at least 1")
        self.clock = clock
        self._backlog: deque[Event] = deque(maxlen=backlog)
        self._listeners: list[Listener] = []
        self._next_id = first_id
        self.published: dict[str, int] = {}  # kind -> events published, for the stats

    @property
    def last_id(self) -> int:
        """The id of the latest event; ``first_id - 1`` before the first."""
        return self._next_id - 1

    def publish(self, kind: str, *, device_id: str | None, channel_id: str | None = None,
                **data: Any) -> Event:
        """Number, keep and hand ``kind`` to every listener; returns the event."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = Event(self._next_id, kind, self.clock.time(),
                      {"device_id": device_id, "channel_id": channel_id, **data})
        self._next_id += 1
        self._backlog.append(event)
        self.published[kind] = self.published.get(kind, 0) + 1
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one consumer's bug must not stop the others; logged
                log.failure("event listener {listener!r} failed on {kind} event {id}", listener=listener,
                            kind=kind, id=event.id)
        return event

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def kept(self) -> list[Event]:
        """Every event the backlog still holds, oldest first."""
        return list(self._backlog)

    def since(self, last_id: int) -> list[Event] | None:
        """The kept events after ``last_id``, oldest first; ``None`` when some after it are no longer kept
        (the caller missed events and must resynchronise)."""
        if last_id >= self.last_id:
            return []
        if not self._backlog or self._backlog[0].id > last_id + 1:
            return None
        return [e for e in self._backlog if e.id > last_id]
