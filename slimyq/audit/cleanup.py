"""Batched deletion of old audit entries, safe for cron.

Rule: an entry is deleted when its timestamp is *strictly older* than the cut-off (an entry
exactly at the cut-off is kept) and its action is not excluded.

How: under the cleanup lock (:mod:`slimyq.audit.lock`), repeatedly delete the next
``batch_size`` matching entries, oldest first through the timestamp index, with one statement
(``DELETE ... WHERE id IN (SELECT id ... ORDER BY timestamp LIMIT n)`` or its backend's
equivalent), each batch in its own short transaction. Memory stays flat (no ids travel to
Python), no long lock is held on the table, and an interrupted run leaves every committed batch
deleted and the rest intact: the next run simply carries on.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import peewee

from slimyq.audit._sql import real_database, rows_of
from slimyq.audit.lock import cleanup_lock
from slimyq.db.connect import short_reason
from slimyq.db.models import AuditLog
from slimyq.errors import SlimyqError
from slimyq.jobs.base import write_transaction
from slimyq.text import count
from slimyq.timeparse import fmt_utc, to_aware_utc, to_naive_utc

DEFAULT_BATCH = 5000
MAX_BATCH = 10_000
BUSY_MESSAGE = "another audit cleanup is running; nothing done"


class CleanupFailed(SlimyqError):
    """A database error mid-way. Batches already committed stay deleted; a rerun finishes."""

    def __init__(self, deleted: int, reason: str) -> None:
        self.deleted = deleted
        super().__init__(
            f"audit cleanup failed after deleting {count(deleted, 'entry')} ({reason}); "
            "the table is consistent, run the cleanup again to finish"
        )


@dataclass(frozen=True)
class CleanupPreview:
    """What a cleanup would delete (``--dry-run``)."""

    before: dt.datetime
    excluded_actions: list[str]
    would_delete: int
    oldest: dt.datetime | None
    newest: dt.datetime | None
    dry_run: bool = True

    def line(self) -> str:
        text = f"would delete {count(self.would_delete, 'audit entry')} older than {fmt_utc(self.before)}"
        if self.would_delete and self.oldest and self.newest:
            text += f" (oldest {fmt_utc(self.oldest)}, newest {fmt_utc(self.newest)})"
        return text + _kept(self.excluded_actions)


@dataclass(frozen=True)
class CleanupResult:
    before: dt.datetime
    excluded_actions: list[str]
    deleted: int
    batches: int
    elapsed_seconds: float
    skipped: bool = False  # another cleanup held the lock
    dry_run: bool = False

    def line(self) -> str:
        if self.skipped:
            return BUSY_MESSAGE
        return f"deleted {count(self.deleted, 'audit entry')} older than {fmt_utc(self.before)}" + _kept(
            self.excluded_actions
        )


def _kept(excluded: Sequence[str]) -> str:
    return f", kept actions {', '.join(excluded)}" if excluded else ""


def _matching(before: dt.datetime, exclude: Sequence[str]) -> peewee.Expression:
    cond: peewee.Expression = AuditLog.timestamp < before
    if exclude:
        cond &= AuditLog.action.not_in(list(exclude))
    return cond


def preview(db: peewee.Database, before: dt.datetime, exclude: Sequence[str] = ()) -> CleanupPreview:
    """Count the entries a cleanup would delete, and their oldest and newest timestamps."""
    real_database(db).connect(reuse_if_open=True)
    query = AuditLog.select(
        peewee.fn.COUNT(AuditLog.id), peewee.fn.MIN(AuditLog.timestamp), peewee.fn.MAX(AuditLog.timestamp)
    ).where(_matching(to_naive_utc(before), exclude))
    row = rows_of(query)[0]
    count, oldest, newest = int(row[0] or 0), _dt(row[1]), _dt(row[2])
    return CleanupPreview(to_aware_utc(before), list(exclude), count, oldest, newest)


def _dt(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's MIN/MAX return the stored text
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return to_aware_utc(value)


def cleanup(
    db: peewee.Database,
    before: dt.datetime,
    exclude: Sequence[str] = (),
    *,
    batch_size: int = DEFAULT_BATCH,
    wait: float = 0.0,
    on_batch: Callable[[int], None] | None = None,
) -> CleanupResult:
    """Delete matching entries in batches. When another cleanup holds the lock for longer than
    ``wait`` seconds, returns a result with ``skipped=True`` and deletes nothing.

    Raises :class:`CleanupFailed` (with the count deleted so far) on a database error.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
    started = time.monotonic()
    cut = to_naive_utc(before)
    excluded = list(dict.fromkeys(exclude))
    real = real_database(db)
    deleted = batches = 0
    try:
        real.connect(reuse_if_open=True)
        with cleanup_lock(real, wait) as held:
            if not held:
                waited = round(time.monotonic() - started, 3)
                return CleanupResult(to_aware_utc(before), excluded, 0, 0, waited, skipped=True)
            floor: dt.datetime | None = None
            while True:
                n, floor, full = _one_batch(real, cut, excluded, floor, batch_size)
                if n:
                    batches += 1
                    deleted += n
                    if on_batch is not None:
                        on_batch(n)
                if not full:
                    break
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:
        raise CleanupFailed(deleted, short_reason(exc)) from exc
    return CleanupResult(to_aware_utc(before), excluded, deleted, batches, round(time.monotonic() - started, 3))


def _one_batch(
    db: peewee.Database, cut: dt.datetime, exclude: list[str], floor: dt.datetime | None, size: int
) -> tuple[int, dt.datetime | None, bool]:
    """Delete one batch in one statement: (rows deleted, newest timestamp deleted, batch was full).

    The batch is "the next ``size`` matching ids, oldest first"; each backend gets the form it
    runs fastest: SQLite by rowid through a subquery; PostgreSQL by ``ctid`` (a TID scan, no
    primary-key lookups; audit rows are never updated, and a row updated meanwhile would simply
    not match) in a CTE that also returns the newest timestamp, where the next batch starts, past
    the dead index entries this one leaves until vacuum; MySQL/MariaDB (no LIMIT in IN
    subqueries) with ``DELETE ... ORDER BY timestamp LIMIT n``.
    """
    cond = _matching(cut, exclude)
    if floor is not None:
        cond &= AuditLog.timestamp >= floor
    with write_transaction(db):
        if isinstance(db, peewee.PostgresqlDatabase):
            inner_sql, params = (
                AuditLog.select(peewee.SQL("ctid")).where(cond).order_by(AuditLog.timestamp).limit(size).sql()
            )
            sql = (
                'WITH gone AS (DELETE FROM "audit_logs" WHERE ctid = ANY(ARRAY('
                + inner_sql
                + ')) RETURNING "timestamp") SELECT COUNT(*), MAX("timestamp") FROM gone'
            )
            n, newest = _first_row(db, sql, params)
            return int(n), newest or floor, int(n) == size
        if isinstance(db, peewee.MySQLDatabase):
            query = AuditLog.delete().where(cond).order_by(AuditLog.timestamp).limit(size)
        else:
            inner = AuditLog.select(peewee.SQL("rowid")).where(cond).order_by(AuditLog.timestamp).limit(size)
            query = AuditLog.delete().where(peewee.SQL("rowid").in_(inner))
        n = int(query.execute())
    return n, None, n == size


def _first_row(db: Any, sql: str, params: Any) -> tuple[Any, ...]:
    row: tuple[Any, ...] = db.execute_sql(sql, params).fetchone()
    return row
