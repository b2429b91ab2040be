"""GB/T 28181-2016 §A.2.1 ``dateTime``: read leniently, written in the standard form."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Final

_GB_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


def parse_gb_time(s: str | None) -> datetime | None:
    """Parse a GB/T 28181-2016 §A.2.1 ``dateTime`` leniently, or return None.

    Accepts ``2006-01-02T15:04:05``, unpadded ``2006-1-2T15:4:5``, a space
    instead of ``T``, fractions, and a date alone.  A trailing ``Z`` is
    ignored and the result is naive: devices append it to local time
    (Monibuca gb28181 pitfalls §13.2).  An explicit ``+08:00`` offset gives
    an aware datetime.
    """
    if s is None:
        return None
    m = _GB_TIME_RE.fullmatch(s.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        value = datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0), micro,
        )
    except ValueError:
        return None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if offset >= timedelta(hours=24):
            return None
        value = value.replace(tzinfo=timezone(sign * offset))
    return value


def format_gb_time(value: datetime) -> str:
    """Format a datetime as GB/T 28181-2016 §A.2.1 ``dateTime`` (``YYYY-MM-DDThh:mm:ss``)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S")
