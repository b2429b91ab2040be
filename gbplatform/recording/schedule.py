"""Weekly recording plans: validating a schedule and asking whether it covers a moment.

A schedule is a list of windows ``{"weekday": 0-6, "start": "HH:MM", "end": "HH:MM"}``
(ISO 8601 weekday numbering shifted to Python's: Monday is 0), read in the
platform's time zone; ``end`` may be ``24:00``. A window never wraps past
midnight: a night shift is two windows.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["ScheduleError", "covers", "parse_schedule"]

_HHMM = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
MAX_WINDOWS = 7 * 48


class ScheduleError(ValueError):
    """A malformed schedule; the message names the window at fault."""


def _minutes(value: Any, where: str) -> int:
    if not isinstance(value, str) or (m := _HHMM.fullmatch(value)) is None:
        raise ScheduleError(f"{where}: expected a time HH:MM, got {value!r}")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 24 * 60:
        raise ScheduleError(f"{where}: {value} is past 24:00")
    return minutes


def parse_schedule(value: Any) -> list[dict[str, Any]]:
    """Check ``value`` and return it normalised (sorted); raises ``ScheduleError``."""
    if not isinstance(value, list):
        raise ScheduleError("expected a list of {weekday, start, end} windows")
    if len(value) > MAX_WINDOWS:
        raise ScheduleError(f"at most {MAX_WINDOWS} windows")
    out = []
    for i, window in enumerate(value):
        where = f"[{i}]"
        if not isinstance(window, dict) or set(window) != {"weekday", "start", "end"}:
            raise ScheduleError(f"{where}: expected an object with weekday, start and end")
        day = window["weekday"]
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise ScheduleError(f"{where}.weekday: expected 0 (Monday) to 6 (Sunday), got {day!r}")
        start, end = _minutes(window["start"], f"{where}.start"), _minutes(window["end"], f"{where}.end")
        if end <= start:
            raise ScheduleError(f"{where}: end {window['end']} is not after start {window['start']}")
        out.append({"weekday": day, "start": window["start"], "end": window["end"]})
    return sorted(out, key=lambda w: (w["weekday"], w["start"]))


def covers(schedule: list[dict[str, Any]], when: dt.datetime) -> bool:
    """Whether ``when`` (already in the plan's time zone) falls in one of the windows."""
    day = when.weekday()
    minute = when.hour * 60 + when.minute + when.second / 60
    for window in schedule:
        if window["weekday"] != day:
            continue
        if _minutes(window["start"], "start") <= minute < _minutes(window["end"], "end"):
            return True
    return False
