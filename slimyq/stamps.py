"""Epoch seconds as RQ's timestamps, JavaScript's ISO strings and naive UTC datetimes, fast.

Every job's completion formats four timestamps and its history row converts three; through
``datetime`` that is 1.5-2.6 us each (``strftime``, ``isoformat``, ``replace(tzinfo=None)``).
Here the date and time of day are formatted once per second (``time.gmtime``) and only the
microseconds per call: the same text and values as ``datetime.fromtimestamp(ts, UTC)`` gives
(microseconds rounded half to even, as it rounds them), about a quarter of the cost.
Times outside 1970-9999 take ``datetime``'s own path.
"""

from __future__ import annotations

import datetime as dt
import math
import time

RQ_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # RQ's timestamps (``started_at``, ``ended_at``), as strftime has it
_FIRST, _END = 0.0, 253_402_300_799.0  # 1970-01-01 and the last second of 9999, epoch seconds
Fields = tuple[int, int, int, int, int, int]  # year, month, day, hour, minute, second
_second: tuple[int, str, Fields] = (-1, "", (1970, 1, 1, 0, 0, 0))  # the last second formatted (any thread's)


def _fast(ts: float) -> bool:
    """A float from 1970 to 9999; anything else (an int, a Decimal, NaN) takes datetime's path."""
    return type(ts) is float and _FIRST <= ts < _END


def _split(ts: float) -> tuple[str, Fields, int]:
    """``ts``'s second (as text and as fields) and its microseconds, as ``datetime`` rounds them."""
    global _second
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    sec = int(whole)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    cached = _second
    if cached[0] != sec:
        utc = time.gmtime(sec)
        # (a leap second of a "right/" time zone is 59, as datetime has it)
        fields = (utc.tm_year, utc.tm_mon, utc.tm_mday, utc.tm_hour, utc.tm_min, min(utc.tm_sec, 59))
        utc = time.struct_time((*fields, utc.tm_wday, utc.tm_yday, 0))
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", utc), fields)
    return cached[1], cached[2], us


def rq_time(ts: float) -> str:
    """``2026-11-23T14:21:30.123456Z``: RQ's format (``started_at``, ``ended_at``)."""
    if not _fast(ts):
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(RQ_TIME)
    text, _, us = _split(ts)
    return f"{text}.{us:06d}Z"


def iso_ms(ts: float) -> str:
    """``2026-11-23T14:21:30.123Z``: JavaScript's ``toISOString()`` (an attempt's record)."""
    if not _fast(ts):
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text, _, us = _split(ts)
    return f"{text}.{us // 1000:03d}Z"


def naive_utc(ts: float) -> dt.datetime:
    """The UTC datetime of ``ts`` without a time zone (what the database columns hold)."""
    if not _fast(ts):
        return dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None)
    _, (year, month, day, hour, minute, second), us = _split(ts)
    return dt.datetime(year, month, day, hour, minute, second, us)
