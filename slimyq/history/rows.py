"""A job attempt's row for ``job_runs``: :class:`RunRow` (what the worker hands over) and
:func:`row_values` (the column values, strings cut to their column sizes)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, NamedTuple

from slimyq.stamps import naive_utc

ERROR_MESSAGE_MAX = 2000
Stamp = float | dt.datetime | None  # epoch seconds, or a datetime (naive means UTC)


class RunRow(NamedTuple):
    """One attempt's outcome, as the worker knows it. Never put payload content here.

    ``state`` is one of ``finished``, ``failed``, ``retried``, ``refused``, ``canceled``,
    ``abandoned``, ``stopped``. ``duration_ms`` defaults to ``ended - started`` when both are known.
    ``ended`` defaults to the moment the row is written. (A named tuple: immutable, and built
    for every job, in a quarter of a frozen dataclass's time.)
    """

    job_id: str
    queue: str
    job_type: str
    attempt: int
    state: str
    user_id: str | None = None
    enqueued: Stamp = None
    started: Stamp = None
    ended: Stamp = None
    duration_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    worker: str | None = None


def _naive_utc(value: Stamp) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    return naive_utc(float(value))


def _cut(value: str | None, size: int) -> str | None:
    return None if value is None else str(value)[:size]


def row_values(row: RunRow, now: float | None = None) -> dict[str, Any]:
    """The ``job_runs`` column values for ``row`` (strings cut to their column sizes), in the
    model's column order, each already what its field's ``db_value`` makes it (str, int, float,
    naive datetime or None): the recorder sends them to the driver as they are."""
    started = _naive_utc(row.started)
    ended = _naive_utc(row.ended) or _naive_utc(now if now is not None else time.time())
    duration = row.duration_ms
    if duration is None and started is not None and ended is not None:
        duration = max((ended - started).total_seconds() * 1000.0, 0.0)
    return {
        "job_id": str(row.job_id)[:128],
        "queue": str(row.queue)[:64],
        "job_type": str(row.job_type)[:100],
        "user_id": _cut(row.user_id, 191),
        "attempt": int(row.attempt),
        "state": str(row.state)[:16],
        "enqueued_at": _naive_utc(row.enqueued),
        "started_at": started,
        "ended_at": ended,
        "duration_ms": None if duration is None else round(float(duration), 3),
        "error_type": _cut(row.error_type, 100),
        "error_message": _cut(row.error_message, ERROR_MESSAGE_MAX),
        "worker": _cut(row.worker, 191),
    }
