"""Reading the job history (``job_runs``): listings and aggregate statistics, computed in SQL.

Every function takes the database explicitly and returns plain dataclasses for
:mod:`slimyq.render`. Datetimes come back as aware UTC.

Statistics (:func:`run_stats`), per queue and per (queue, job type), over attempts that ended at
or after ``since``:

* ``runs``: attempts recorded; ``finished``, ``failed`` (failed or refused: the job ended in
  failure), ``retried`` (an attempt failed and the job was retried);
* ``failure_rate``: percent of the jobs that reached an end that failed,
  ``100 * failed / (finished + failed)``, two decimals, 0 when none ended;
* ``p50_ms``/``p95_ms``: continuous percentiles (linear interpolation between the closest ranks,
  like PostgreSQL's ``percentile_cont``) of ``duration_ms`` over every attempt that has one;
  ``max_ms`` its maximum.

Counts and maxima are one ``GROUP BY``; percentiles use ``percentile_cont`` on PostgreSQL and,
on SQLite (>= 3.25) and MariaDB/MySQL, window functions (``ROW_NUMBER``/``COUNT`` over the group)
and a ``GROUP BY`` that picks the two closest ranks. Nothing is aggregated in Python.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import peewee
from peewee import SQL, Case, fn

from slimyq.db.models import JOB_RUN_STATES, JobRun
from slimyq.timeparse import to_aware_utc, to_naive_utc

MAX_LIMIT = 10_000
FAILED_STATES = ("failed", "refused", "stopped")
TABLE_COLUMNS = (
    "ended_at", "job_id", "attempt", "queue", "job_type", "state", "user_id", "duration_ms", "error_type",
)


@dataclass(frozen=True)
class RunRecord:
    """One row of ``job_runs``."""

    id: int
    job_id: str
    queue: str
    job_type: str
    user_id: str | None
    attempt: int
    state: str
    enqueued_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    duration_ms: float | None
    error_type: str | None
    error_message: str | None
    worker: str | None


@dataclass(frozen=True)
class RunStatsRow:
    """Aggregates for one queue (``job_type`` None) or one job type on one queue."""

    queue: str
    job_type: str | None
    runs: int
    finished: int
    failed: int
    retried: int
    failure_rate: float
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class RunStats:
    since: dt.datetime | None
    by_queue: list[RunStatsRow]
    by_type: list[RunStatsRow]

    def sections(self) -> dict[str, Any]:
        """For rendering: one table per grouping (``by_queue`` without the empty type column)."""
        queues = [{k: v for k, v in _plain(r).items() if k != "job_type"} for r in self.by_queue]
        return {"by_queue": queues, "by_type": self.by_type}


def _plain(row: RunStatsRow) -> dict[str, Any]:
    return {k: getattr(row, k) for k in RunStatsRow.__dataclass_fields__}


def _real(db: peewee.Database) -> peewee.Database:
    if isinstance(db, peewee.DatabaseProxy):
        obj: peewee.Database = db.obj
        return obj
    return db


def _tuples(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as tuples (peewee's stubs type them as model instances)."""
    return [tuple(row) for row in query.tuples()]


def _aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text where peewee cannot tell the type
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return to_aware_utc(value)


def _record(row: JobRun) -> RunRecord:
    return RunRecord(
        id=int(row.id),
        job_id=row.job_id,
        queue=row.queue,
        job_type=row.job_type,
        user_id=row.user_id,
        attempt=int(row.attempt),
        state=row.state,
        enqueued_at=_aware(row.enqueued_at),
        started_at=_aware(row.started_at),
        ended_at=_aware(row.ended_at),
        duration_ms=None if row.duration_ms is None else float(row.duration_ms),
        error_type=row.error_type,
        error_message=row.error_message,
        worker=row.worker,
    )


def list_runs(
    db: peewee.Database,
    *,
    since: dt.datetime | None = None,
    state: str | None = None,
    job_type: str | None = None,
    user: str | None = None,
    queue: str | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """Attempts matching every filter given, newest first (by end time)."""
    real = _real(db)
    real.connect(reuse_if_open=True)
    query = JobRun.select()
    if since is not None:
        query = query.where(JobRun.ended_at >= to_naive_utc(since))
    if state is not None:
        query = query.where(JobRun.state == state)
    if job_type is not None:
        query = query.where(JobRun.job_type == job_type)
    if user is not None:
        query = query.where(JobRun.user_id == user)
    if queue is not None:
        query = query.where(JobRun.queue == queue)
    query = query.order_by(JobRun.ended_at.desc(), JobRun.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
    return [_record(row) for row in query.bind(real)]


def job_runs_for(db: peewee.Database, job_id: str) -> list[RunRecord]:
    """Every recorded attempt of one job, first attempt first (empty when none)."""
    real = _real(db)
    real.connect(reuse_if_open=True)
    query = JobRun.select().where(JobRun.job_id == job_id).order_by(JobRun.attempt, JobRun.id)
    return [_record(row) for row in query.bind(real)]


# ---------------------------------------------------------------- statistics


def run_stats(db: peewee.Database, *, since: dt.datetime | None, queue: str | None = None) -> RunStats:
    """Per queue and per (queue, job type) counts, failure rate and duration percentiles."""
    real = _real(db)
    real.connect(reuse_if_open=True)
    cond: list[Any] = []
    if since is not None:
        cond.append(JobRun.ended_at >= to_naive_utc(since))
    if queue is not None:
        cond.append(JobRun.queue == queue)
    by_queue = _grouped(real, cond, [JobRun.queue])
    by_type = _grouped(real, cond, [JobRun.queue, JobRun.job_type])
    return RunStats(None if since is None else to_aware_utc(since), by_queue, by_type)


def _grouped(db: peewee.Database, cond: list[Any], keys: list[peewee.Field]) -> list[RunStatsRow]:
    counts = _counts(db, cond, keys)
    pcts = _percentiles(db, cond, keys)
    rows: list[RunStatsRow] = []
    for key, (runs, finished, failed, retried, max_ms) in counts.items():
        p50, p95 = pcts.get(key, (None, None))
        ended = finished + failed
        rows.append(
            RunStatsRow(
                queue=key[0],
                job_type=key[1] if len(key) > 1 else None,
                runs=runs,
                finished=finished,
                failed=failed,
                retried=retried,
                failure_rate=round(100.0 * failed / ended, 2) if ended else 0.0,
                p50_ms=_ms(p50),
                p95_ms=_ms(p95),
                max_ms=_ms(max_ms),
            )
        )
    return rows


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _all(cond: list[Any]) -> list[Any]:
    """Conditions for ``.where(*...)``, never empty (peewee cannot AND zero expressions)."""
    return cond or [JobRun.id.is_null(False)]


def _count_if(cond: Any) -> Any:
    return fn.SUM(Case(None, [(cond, 1)], 0))


def _counts(db: peewee.Database, cond: list[Any], keys: list[peewee.Field]) -> dict[tuple[str, ...], tuple[Any, ...]]:
    query = (
        JobRun.select(
            *keys,
            fn.COUNT(JobRun.id),
            _count_if(JobRun.state == "finished"),
            _count_if(JobRun.state.in_(FAILED_STATES)),
            _count_if(JobRun.state == "retried"),
            fn.MAX(JobRun.duration_ms),
        )
        .where(*_all(cond))
        .group_by(*keys)
        .order_by(*keys)
        .bind(db)
    )
    out: dict[tuple[str, ...], tuple[Any, ...]] = {}
    for row in _tuples(query):
        n = len(keys)
        runs, finished, failed, retried, max_ms = row[n:]
        out[tuple(row[:n])] = (int(runs), int(finished or 0), int(failed or 0), int(retried or 0), max_ms)
    return out


def _percentiles(
    db: peewee.Database, cond: list[Any], keys: list[peewee.Field]
) -> dict[tuple[str, ...], tuple[Any, Any]]:
    cond = [*cond, JobRun.duration_ms.is_null(False)]
    if isinstance(db, peewee.PostgresqlDatabase):
        query = (
            JobRun.select(*keys, _pg_percentile(0.5), _pg_percentile(0.95))
            .where(*cond)
            .group_by(*keys)
            .bind(db)
        )
    else:
        query = _window_percentiles(cond, keys).bind(db)
    n = len(keys)
    return {tuple(row[:n]): (row[n], row[n + 1]) for row in _tuples(query)}


def _pg_percentile(p: float) -> Any:
    return SQL(f"percentile_cont({p}) WITHIN GROUP (ORDER BY {JobRun.duration_ms.column_name})")


def _window_percentiles(cond: list[Any], keys: list[peewee.Field]) -> Any:
    """Percentiles without ``percentile_cont``: rank every duration in its group (0-based ``rn``,
    group size ``n``); percentile ``p`` sits at position ``pos = p * (n - 1)``: interpolate
    between the rows ranked ``floor(pos)`` and ``ceil(pos)`` (found without FLOOR/CEIL, which
    SQLite may lack: ``rn <= pos < rn + 1`` and ``pos <= rn < pos + 1``)."""
    d = JobRun.duration_ms
    ranked = (
        JobRun.select(
            *keys,
            d.alias("d"),
            (fn.ROW_NUMBER().over(partition_by=keys, order_by=[d]) - 1).alias("rn"),
            fn.COUNT(JobRun.id).over(partition_by=keys).alias("n"),
        )
        .where(*cond)
        .cte("ranked")
    )
    cols = [getattr(ranked.c, k.column_name) for k in keys]

    def percentile(p: float) -> Any:
        rn, n, dur = ranked.c.rn, ranked.c.n, ranked.c.d
        pos = (n - 1) * p
        below = (rn <= pos) & (pos < rn + 1)
        above = (rn >= pos) & (rn < pos + 1)
        lo_v = fn.MAX(Case(None, [(below, dur)], None))
        lo_rn = fn.MAX(Case(None, [(below, rn)], None))
        hi_v = fn.MAX(Case(None, [(above, dur)], None))
        return lo_v + ((fn.MAX(n) - 1) * p - lo_rn) * (hi_v - lo_v)

    return ranked.select_from(*cols, percentile(0.5), percentile(0.95)).group_by(*cols)


def valid_state(state: str) -> bool:
    return state in JOB_RUN_STATES
