"""Effect-once for handlers that write: a marker row per job id, in the same transaction.

``once(ctx, "update_conversation", apply)`` runs ``apply`` (which writes and returns the job's
result) unless this job already did, in which case it returns the result of that first run and
writes nothing. The marker lives in its own table (``job_effects``), keyed by the job id: it is
not inferred from the current rows (a rename compared with the title now, a message that may
have been deleted since) and not a row that maintenance deletes (audit entries, job history).

``apply`` and the marker commit together or not at all: a run that fails leaves no marker, so its
retry runs for real. A job type declared ``batchable`` (its writes are database work only) applies
first and looks the marker up only when the marker's insert (or the work) fails: see
:func:`_apply_first`. Two runs of one job at once (which the runtime never starts) could not both
commit: the marker's primary key refuses the second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from slimyq.db.models import JobEffect, utcnow
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
    gone) is raised as it is, and so is any error of the lookup itself: the job is retried."""
    import peewee

    try:
        with write_transaction(db):
            result = apply()
            _record(db, ctx.job_id, effect, result)
        return result
    except (Interrupted, peewee.OperationalError, peewee.InterfaceError):
        raise
    except Exception:
        found, first = _lookup(db, ctx.job_id, effect)
        if found:
            return cast(R, first)
        raise


# The marker's two statements, built by peewee once per database class (building a query costs
# more CPU than running it on SQLite); each is checked against peewee's own parameters first, and
# a database where they differ keeps peewee's path.
_SELECT = "select"
_INSERT = "insert"
_SQL: dict[tuple[type, str], str | None] = {}
_A, _B, _C = "\x00job", "\x00effect", {"\x00": 0}


def _statement(db: Any, kind: str) -> str | None:
    key = (type(db), kind)
    if key not in _SQL:
        if kind == _SELECT:
            query: Any = JobEffect.select(JobEffect.result).where((JobEffect.job_id == _A) & (JobEffect.effect == _B))
            expected: list[Any] = [_A, _B]
        else:
            stamp = utcnow()
            query = JobEffect.insert(job_id=_A, effect=_B, result=_C, created_at=stamp).as_rowcount()
            expected = [_A, _B, JobEffect.result.db_value(_C), JobEffect.created_at.db_value(stamp)]
        sql, params = db.get_sql_context().sql(query).query()
        _SQL[key] = sql if list(params) == expected else None
    return _SQL[key]


def _lookup(db: Any, job_id: str, effect: str) -> tuple[bool, Any]:
    sql = _statement(db, _SELECT)
    if sql is None:
        done: JobEffect | None = JobEffect.get_or_none((JobEffect.job_id == job_id) & (JobEffect.effect == effect))
        return (True, done.result) if done is not None else (False, None)
    row = db.execute_sql(sql, [job_id, effect]).fetchone()
    return (True, JobEffect.result.python_value(row[0])) if row is not None else (False, None)


def _record(db: Any, job_id: str, effect: str, result: Any) -> None:
    sql = _statement(db, _INSERT)
    if sql is None:
        JobEffect.insert(job_id=job_id, effect=effect, result=result, created_at=utcnow()).execute()
        return
    db.execute_sql(sql, [job_id, effect, JobEffect.result.db_value(result), JobEffect.created_at.db_value(utcnow())])


def applied(job_id: str, effect: str) -> Any:
    """The first result of ``job_id``'s ``effect``, or None if it has not happened (for tests and
    inspection)."""
    db = JobEffect._meta.database
    db = getattr(db, "obj", db)  # the database behind the models' proxy
    if db is None:
        row: JobEffect | None = JobEffect.get_or_none((JobEffect.job_id == job_id) & (JobEffect.effect == effect))
        return row.result if row is not None else None
    return _lookup(db, job_id, effect)[1]
