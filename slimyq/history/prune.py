"""Batched deletion of old job history, safe for cron.

Rule: a row goes when it ended *strictly before* the cut-off (a row ending exactly at the
cut-off is kept). Rows without an end time are never pruned.

How: repeatedly select the ids of the next ``batch_size`` matching rows (oldest first, through
the ``ended_at`` index) and ``DELETE ... WHERE id IN (...)``, each batch in its own short
transaction. Memory stays flat (one batch of ids), no long lock is held, and an interrupted run
leaves every committed batch deleted: the next run carries on. Each select starts at the last
batch's newest end time, so PostgreSQL does not rescan the dead index entries of earlier batches.
Two prunes at once are harmless (the second deletes what the first has not).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee

from slimyq.db.models import JobRun
from slimyq.errors import SlimyqError
from slimyq.text import count
from slimyq.timeparse import fmt_utc, to_aware_utc, to_naive_utc

DEFAULT_BATCH = 5000
MAX_BATCH = 50_000


class PruneFailed(SlimyqError):
    """A database error mid-way. Batches already committed stay deleted; a rerun finishes."""

    def __init__(self, deleted: int, reason: str) -> None:
        self.deleted = deleted
        super().__init__(
            f"history prune failed after deleting {deleted} rows ({reason}); "
            "the table is consistent, run the prune again to finish"
        )


@dataclass(frozen=True)
class PrunePreview:
    """What a prune would delete (``--dry-run``)."""

    before: dt.datetime
    would_delete: int
    oldest: dt.datetime | None
    newest: dt.datetime | None
    dry_run: bool = True

    def line(self) -> str:
        text = f"would delete {count(self.would_delete, 'job history row')} older than {fmt_utc(self.before)}"
        if self.would_delete and self.oldest and self.newest:
            text += f" (oldest {fmt_utc(self.oldest)}, newest {fmt_utc(self.newest)})"
        return text


@dataclass(frozen=True)
class PruneResult:
    before: dt.datetime
    deleted: int
    elapsed_seconds: float
    dry_run: bool = False

    def line(self) -> str:
        return f"deleted {count(self.deleted, 'job history row')} older than {fmt_utc(self.before)}"


def _real(db: peewee.Database) -> peewee.Database:
    if isinstance(db, peewee.DatabaseProxy):
        obj: peewee.Database = db.obj
        return obj
    return db


def _dt(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's MIN/MAX hand back the stored text
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value


def _tuples(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as tuples (peewee's stubs type them as model instances)."""
    return [tuple(row) for row in query.tuples()]


def _transaction(db: peewee.Database) -> Any:
    """Short write transaction; on SQLite take the write lock up front (no lock-upgrade BUSY)."""
    if isinstance(db, peewee.SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


def preview(db: peewee.Database, before: dt.datetime) -> PrunePreview:
    """Count the rows a prune would delete, with their oldest and newest end times."""
    real = _real(db)
    real.connect(reuse_if_open=True)
    query = (
        JobRun.select(_count(), peewee.fn.MIN(JobRun.ended_at), peewee.fn.MAX(JobRun.ended_at))
        .where(JobRun.ended_at < to_naive_utc(before))
        .bind(real)
    )
    count, oldest, newest = _tuples(query)[0]
    lo, hi = _dt(oldest), _dt(newest)
    return PrunePreview(
        to_aware_utc(before),
        int(count or 0),
        None if lo is None else to_aware_utc(lo),
        None if hi is None else to_aware_utc(hi),
    )


def _count() -> Any:
    return peewee.fn.COUNT(JobRun.id)


def prune(
    db: peewee.Database,
    before: dt.datetime,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete every row that ended before ``before``, in batches; returns how many went.

    ``progress(n)`` is called after each committed batch. Raises :class:`PruneFailed` (with the
    count deleted so far) on a database error.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
    cut = to_naive_utc(before)
    real = _real(db)
    deleted = 0
    floor: dt.datetime | None = None
    try:
        real.connect(reuse_if_open=True)
        while True:
            n, floor, full = _one_batch(real, cut, floor, batch_size)
            if n:
                deleted += n
                if progress is not None:
                    progress(n)
            if not full:
                return deleted
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:
        from slimyq.db.connect import short_reason

        raise PruneFailed(deleted, short_reason(exc)) from exc


def prune_result(
    db: peewee.Database,
    before: dt.datetime,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> PruneResult:
    """:func:`prune`, with the cut-off and the time taken (for the CLI's summary)."""
    started = time.monotonic()
    deleted = prune(db, before, batch_size=batch_size, progress=progress)
    return PruneResult(to_aware_utc(before), deleted, round(time.monotonic() - started, 3))


def _one_batch(
    db: peewee.Database, cut: dt.datetime, floor: dt.datetime | None, size: int
) -> tuple[int, dt.datetime | None, bool]:
    """Delete one batch: (rows deleted, newest end time seen, whether the batch was full)."""
    cond = JobRun.ended_at < cut
    if floor is not None:
        cond &= JobRun.ended_at >= floor
    with _transaction(db):
        query = JobRun.select(JobRun.id, JobRun.ended_at).where(cond).order_by(JobRun.ended_at).limit(size)
        rows = _tuples(query.bind(db))
        if not rows:
            return 0, floor, False
        ids = [r[0] for r in rows]
        n = JobRun.delete().where(JobRun.id.in_(ids) & (JobRun.ended_at < cut)).bind(db).execute()
    return int(n), _dt(rows[-1][1]), len(rows) == size
