"""Effect-once for handlers that write: a marker row per job id, in the same transaction.

``once(ctx, "update_conversation", apply)`` runs ``apply`` (which writes and returns the job's
result) unless this job already did, in which case it returns the result of that first run and
writes nothing. The marker lives in its own table (``job_effects``), keyed by the job id: it is
not inferred from the current rows (a rename compared with the title now, a message that may
have been deleted since) and not a row that maintenance deletes (audit entries, job history).

``apply`` and the marker commit together or not at all: a run that fails leaves no marker, so its
retry runs for real. A job type declared ``batchable`` (its writes are database work only) applies
first and looks the marker up only when the marker's insert (or the work) fails: see
:func:`_apply_first`. Inside a batch transaction (:mod:`slimyq.runtime.batch`) the markers of all
its jobs are looked up together when it begins and written together before it commits, in
statements of up to ``ROWS`` (:class:`Deferred`). Two runs of one job at once (which the runtime never starts) could
not both commit: the marker's primary key refuses the second.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from slimyq.db.models import JobEffect, utcnow
from slimyq.db.statements import sql_as_executed
from slimyq.jobs.base import Interrupted, JobContext, write_transaction

R = TypeVar("R")


def once(ctx: JobContext, effect: str, apply: Callable[[], R], *, database_only: bool = False) -> R:
    """``database_only``: ``apply`` writes to this database and nothing else (a job type declared
    ``batchable`` says so for all of its blocks; a handler whose external call came before says so
    here), so it may be applied first (:func:`_apply_first`)."""
    db = ctx.db
    if ctx.rerunnable or database_only:
        return _apply_first(ctx, db, effect, apply)
    with write_transaction(db):
        found, first = _lookup(db, ctx.job_id, effect)
        if found:
            return cast(R, first)
        result = apply()
        _record(db, ctx.job_id, effect, result)
    return result


def _apply_first(ctx: JobContext, db: Any, effect: str, apply: Callable[[], R]) -> R:
    """For writes that are database work only (``ctx.rerunnable``, ``database_only``): apply, then write the
    marker, and look the marker up only if that fails: one statement less per job than looking
    first. A rerun fails at the marker's primary key, or earlier because the data changed since
    the first run (its conversation is gone, a row it reads was deleted); either way its writes
    are rolled back with the block and the first result is returned: the same outcome as looking
    first. A failure that says nothing about the data (the job's timeout or stop, the database
    gone) is raised as it is, and so is any error of the lookup itself: the job is retried.

    Inside a batch transaction that covers the job (:class:`Deferred`), the lookup is the batch's,
    made when it began, and the marker of a deferrable first block is written with the batch's."""
    import peewee

    from slimyq.db.savepoints import adopted

    batch = _deferred.now
    if batch is not None and not batch.covers(db, ctx.job_id):
        batch = None
    try:
        if batch is not None:
            found, first = batch.first(ctx.job_id, effect)
            if found:  # a rerun (its first run committed before the batch began), or a second block
                return cast(R, first)
        block = write_transaction(db)
        later = batch if batch is not None and adopted(block) and batch.deferrable(effect) else None
        with block:
            result = apply()
            # As stored now: a result that cannot be fails its own job here, as the insert would.
            stored = JobEffect.result.db_value(result) if later is not None else None
            if not _storable(stored):  # not deferred, or a result the insert might refuse
                later = None
                _record(db, ctx.job_id, effect, result)
        if later is not None:
            later.add(ctx.job_id, effect, stored)
        return result
    except (Interrupted, peewee.OperationalError, peewee.InterfaceError):
        raise
    except Exception:
        found, first = _lookup(db, ctx.job_id, effect)
        if found:
            return cast(R, first)
        raise


# The marker's statements, built by peewee once per database class and row count (building a query
# costs more CPU than running it on SQLite); each is checked against peewee's own parameters first,
# and a database where they differ keeps peewee's path.
_SELECT = "select"  # one job's marker of one effect
_SELECT_JOBS = "select jobs"  # every marker of n jobs
_INSERT = "insert"  # n markers
_SQL: dict[tuple[type, str, int], str | None] = {}
ROWS = 100  # markers looked up, or written, per statement
_EFFECT = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")  # effect names a batch's write of markers takes (the column's 64)


def _statement(db: Any, kind: str, n: int = 1) -> str | None:
    key = (type(db), kind, n)
    if key not in _SQL:
        jobs, effects, results = ([f"\x00job{i}" for i in range(n)], [f"\x00effect{i}" for i in range(n)],
                                  [{"\x00": i} for i in range(n)])
        if kind == _SELECT:
            query: Any = JobEffect.select(JobEffect.result).where(
                (JobEffect.job_id == jobs[0]) & (JobEffect.effect == effects[0]))
            expected: list[Any] = [jobs[0], effects[0]]
        elif kind == _SELECT_JOBS:
            query = JobEffect.select(JobEffect.job_id, JobEffect.effect, JobEffect.result).where(
                JobEffect.job_id.in_(jobs))
            expected = list(jobs)
        else:
            stamp = utcnow()
            query = JobEffect.insert_many([{"job_id": j, "effect": e, "result": r, "created_at": stamp}
                                           for j, e, r in zip(jobs, effects, results, strict=True)]).as_rowcount()
            expected = [v for j, e, r in zip(jobs, effects, results, strict=True)
                        for v in (j, e, JobEffect.result.db_value(r), JobEffect.created_at.db_value(stamp))]
        sql, params = sql_as_executed(db, query)
        _SQL[key] = sql if params == expected else None
    return _SQL[key]


def _lookup(db: Any, job_id: str, effect: str) -> tuple[bool, Any]:
    sql = _statement(db, _SELECT)
    if sql is None:
        done: JobEffect | None = JobEffect.get_or_none((JobEffect.job_id == job_id) & (JobEffect.effect == effect))
        return (True, done.result) if done is not None else (False, None)
    row = db.execute_sql(sql, [job_id, effect]).fetchone()
    return (True, JobEffect.result.python_value(row[0])) if row is not None else (False, None)


def _record(db: Any, job_id: str, effect: str, result: Any) -> None:
    _record_many(db, [(job_id, effect, result)])


def _record_many(db: Any, markers: list[tuple[str, str, Any]], stored: bool = False) -> None:
    """``stored``: the results are in their stored form already (:meth:`Deferred.add`)."""
    for start in range(0, len(markers), ROWS):
        chunk = markers[start:start + ROWS]
        sql = _statement(db, _INSERT, len(chunk))
        stamp = utcnow()
        if sql is None:
            JobEffect.insert_many([{"job_id": j, "effect": e, "created_at": stamp,
                                    "result": JobEffect.result.python_value(r) if stored else r}
                                   for j, e, r in chunk]).as_rowcount().execute()
            continue
        when = JobEffect.created_at.db_value(stamp)
        db.execute_sql(sql, [v for j, e, r in chunk
                             for v in (j, e, r if stored else JobEffect.result.db_value(r), when)])


def _lookup_many(db: Any, job_ids: list[str]) -> dict[tuple[str, str], str | None]:
    """The markers of ``job_ids``, their results as stored."""
    found: dict[tuple[str, str], str | None] = {}
    for start in range(0, len(job_ids), ROWS):
        chunk = job_ids[start:start + ROWS]
        sql = _statement(db, _SELECT_JOBS, len(chunk))
        if sql is None:
            rows: Iterable[tuple[Any, ...]] = cast(Iterable[tuple[Any, ...]], JobEffect.select(
                JobEffect.job_id, JobEffect.effect, JobEffect.result).where(JobEffect.job_id.in_(chunk)).tuples())
            found.update(((j, e), JobEffect.result.db_value(r)) for j, e, r in rows)
            continue
        found.update(((j, e), r) for j, e, r in db.execute_sql(sql, chunk).fetchall())
    return found


# Characters of a deferred marker's result: MySQL's TEXT holds 65,535 bytes, and a JSON text of 16,384
# characters is at most 65,530 bytes of UTF-8 (only the characters inside its strings take 4).
STORED_MOST = 16 * 1024


def _storable(stored: str | None) -> bool:
    """A result every database stores as it is: text (a result of None is stored as JSON null), valid UTF-8 (a
    lone surrogate is not), and short; anything else is written at once, where a refusal fails
    its own job only."""
    if stored is None or len(stored) > STORED_MOST:
        return False
    try:
        stored.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Now(threading.local):
    now: Deferred | None = None


_deferred = _Now()


class Deferred:
    """A batch transaction's effect-once markers (:mod:`slimyq.runtime.batch`), in two statements
    instead of one per job: those its jobs already have are looked up together when the
    transaction begins (a rerun returns its first result from there, applying nothing), and the
    new ones are written together just before it commits (:meth:`flush`). A marker another run
    committed in between (two runs of one job at once: a takeover) fails that insert on its
    primary key, so the whole transaction rolls back and its jobs run again, finding it.

    Only the marker of a ``once()`` block that is the job's first (its block is the job's own
    savepoint: :func:`slimyq.db.savepoints.adopt`) is deferred: nothing but the job's failure can
    roll that block back, and the job's failure drops its markers with it (:meth:`job_failed`). A
    later block, or one inside a transaction block of the handler's own (which the handler could
    roll back and go on), writes its marker at once as usual. So do jobs whose ids are not RQ's
    usual ones (``job_ids`` leaves them out), effects with unusual names and results that a
    database might refuse (:func:`_storable`): what the insert could refuse fails its own job
    there, never the batch's write of the others' markers (and should the write fail after all,
    the batch's jobs are not deferred again in this process: :mod:`slimyq.runtime.batch`). The
    result is stored as it was when the block ended (a handler that changes it afterwards changes
    nothing)."""

    def __init__(self, db: Any, job_ids: list[str]) -> None:
        self.db = db
        self.ids = set(job_ids)
        self.known = _lookup_many(db, job_ids)  # as stored
        self.markers: list[tuple[str, str, str | None]] = []  # (job id, effect, the result as stored)
        self._added: dict[tuple[str, str], str | None] = {}
        self._mark = 0

    def __enter__(self) -> Deferred:
        _deferred.now = self
        return self

    def __exit__(self, *exc: object) -> None:
        _deferred.now = None

    def covers(self, db: Any, job_id: str) -> bool:
        return db is self.db and job_id in self.ids

    @staticmethod
    def deferrable(effect: str) -> bool:
        return _EFFECT.match(effect) is not None

    def first(self, job_id: str, effect: str) -> tuple[bool, Any]:
        """Whether ``job_id``'s ``effect`` happened (committed before, or earlier in this
        transaction), and its first result."""
        key = (job_id, effect)
        for markers in (self.known, self._added):
            if key in markers:
                return True, JobEffect.result.python_value(markers[key])  # a value of its own each time
        return False, None

    def job(self) -> None:
        """A job begins."""
        self._mark = len(self.markers)

    def job_failed(self) -> None:
        """The job's savepoint was rolled back: so are its markers."""
        for job_id, effect, _ in self.markers[self._mark:]:
            self._added.pop((job_id, effect), None)
        del self.markers[self._mark:]

    def add(self, job_id: str, effect: str, stored: str | None) -> None:
        self.markers.append((job_id, effect, stored))
        self._added[(job_id, effect)] = stored

    def flush(self) -> None:
        """Write the transaction's markers (before its commit)."""
        if self.markers:
            _record_many(self.db, self.markers, stored=True)
            self.markers, self._mark = [], 0
            self._added.clear()


def applied(job_id: str, effect: str) -> Any:
    """The first result of ``job_id``'s ``effect``, or None if it has not happened (for tests and
    inspection; a block that returned None reads as not done: ask this only of effects whose
    result is never None, as the chat job's reply is a dict)."""
    db = JobEffect._meta.database
    db = getattr(db, "obj", db)  # the database behind the models' proxy
    if db is None:
        row: JobEffect | None = JobEffect.get_or_none((JobEffect.job_id == job_id) & (JobEffect.effect == effect))
        return row.result if row is not None else None
    return _lookup(db, job_id, effect)[1]
