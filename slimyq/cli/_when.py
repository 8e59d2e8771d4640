"""``--in 10m`` and ``--at TIME``: when a scheduled job should run.

``--in`` takes a number with a unit (``90s``, ``10m``, ``1h30m``, ``2d``; a bare number is
seconds). ``--at`` takes an ISO 8601 date-time (``2030-01-02T09:00``, ``...Z``, ``...+02:00``) or
``HH:MM`` / ``HH:MM:SS`` meaning today. Times without an offset are UTC, like every slimyq date
option. Problems come back as ``--in: ...`` / ``--at: ...`` lines (reported with the payload's).
"""

from __future__ import annotations

import datetime as dt
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
MAX_DELAY = dt.timedelta(days=366)


def parse_delay(text: str) -> dt.timedelta:
    """``10m`` -> 10 minutes; ``1h30m`` works too. Raises ValueError with a message."""
    cleaned = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(cleaned):
        match = _PART.match(cleaned, pos)
        if not match or match.end() == pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(f"{text!r} is not a delay (use e.g. 30s, 10m, 1h30m, 2d)")
    delay = dt.timedelta(seconds=total)
    if delay <= dt.timedelta(0):
        raise ValueError("the delay must be more than 0 (leave --in out to run now)")
    if delay > MAX_DELAY:
        raise ValueError("the delay must be at most 366 days")
    return delay


def parse_at(text: str, now: dt.datetime) -> dt.datetime:
    """An aware UTC datetime for ``--at``; ValueError for a bad or past time."""
    value = text.strip()
    clock = _CLOCK.match(value)
    if clock:
        hour, minute, second = int(clock.group(1)), int(clock.group(2)), int(clock.group(3) or 0)
        try:
            when = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        except ValueError:
            raise ValueError(f"{text!r} is not a time of day (use HH:MM)") from None
        if when <= now:
            raise ValueError(
                f"{value} UTC today has passed (now {now:%H:%M} UTC); give a date, e.g. "
                f"{(now + dt.timedelta(days=1)):%Y-%m-%d}T{value}"
            )
        return when
    try:
        when = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time (use ISO 8601 like 2030-01-02T09:00Z, or HH:MM)") from None
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    if when <= now:
        raise ValueError(f"{value} is in the past (now {now:%Y-%m-%dT%H:%M:%S}Z)")
    return when


def run_at(in_: str | None, at: str | None, now: dt.datetime | None = None) -> tuple[dt.datetime | None, list[str]]:
    """The scheduled time (None = now) and the problems with the two options."""
    now = now or dt.datetime.now(dt.UTC)
    if in_ is not None and at is not None:
        return None, ["--in/--at: give one of them, not both"]
    try:
        if in_ is not None:
            return now + parse_delay(in_), []
        if at is not None:
            return parse_at(at, now), []
    except ValueError as exc:
        return None, [f"{'--in' if in_ is not None else '--at'}: {exc}"]
    return None, []
