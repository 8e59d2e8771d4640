"""Durations (``30s``, ``10m``, ``1h``, ``7d``, ``2w``) and ISO dates for command-line options.

Everything is UTC: a date or datetime without an offset is read as UTC, one with an offset is
converted. Functions return aware UTC datetimes and raise :class:`ValueError` with a message fit
to show after the option name (``--since: ...``).
"""

from __future__ import annotations

import datetime as dt
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DURATION_HELP = "30s, 10m, 1h, 7d or 2w"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_duration(text: str) -> bool:
    return bool(_DURATION.match(text))


def parse_duration(text: str) -> dt.timedelta:
    """``7d`` -> 7 days. Units: s, m, h, d, w (one unit, a whole or decimal number)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use {DURATION_HELP})")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def is_date_only(text: str) -> bool:
    return bool(_DATE_ONLY.match(text.strip()))


def parse_instant(text: str) -> dt.datetime:
    """An ISO date (``2024-05-01``, midnight UTC) or datetime (``2024-05-01T12:30``, ``...Z``,
    ``...+02:00``) as an aware UTC datetime."""
    raw = text.strip()
    candidate = raw[:-1] + "+00:00" if raw[-1:] in ("z", "Z") else raw
    try:
        value = dt.datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or time (use an ISO date like 2024-05-01 or 2024-05-01T12:30:00Z)"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_end(text: str) -> dt.datetime:
    """Like :func:`parse_instant`, but a bare date means the end of that day (inclusive bound)."""
    value = parse_instant(text)
    if is_date_only(text):
        return value + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return value


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A duration back from now (``7d``) or an absolute ISO date/datetime."""
    if is_duration(text):
        return (now or now_utc()) - parse_duration(text)
    try:
        return parse_instant(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration ({DURATION_HELP}) nor an ISO date like 2024-05-01"
        ) from None


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    """The form the database holds: naive UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def to_aware_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def fmt_utc(value: dt.datetime) -> str:
    """``2024-05-01T12:30:00Z`` (microseconds only when there are some)."""
    value = to_naive_utc(value)
    spec = "microseconds" if value.microsecond else "seconds"
    return value.isoformat(timespec=spec) + "Z"
