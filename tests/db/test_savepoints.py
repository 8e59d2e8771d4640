"""A batched job's first transaction block uses the job's own savepoint: fewer statements, the
same rollbacks (on SQLite, PostgreSQL and MariaDB)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import pytest

from slimyq.config import Settings
from slimyq.db.models import Conversation, utcnow
from slimyq.jobs.base import JobContext, write_transaction
from slimyq.runtime import codec
from slimyq.runtime.batch import run_batch
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result


def _insert(ctx: JobContext, kind: str) -> None:
    now = utcnow()
    Conversation.insert(id=ctx.derived_id(kind), user_id="u1", title=kind, personality_mode="helpful",
                        created_at=now, updated_at=now).execute()


@pytest.fixture
def sent(db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement's first word, as the database is sent it (through the instrumented path)."""
    words: list[str] = []
    real = db.execute_sql

    def execute_sql(sql: str, params: Any = None) -> Any:
        words.append(sql.split(None, 1)[0].upper())
        return real(sql, params)

    monkeypatch.setitem(vars(db), "execute_sql", execute_sql)
    yield words


def _batch(db: Any, handlers: list[Callable[[JobContext], Any]]) -> list[Result]:
    def run(job: ClaimedJob) -> Result:
        ctx = JobContext(job.id, "database", 1, Settings(), db_factory=lambda: db, rerunnable=True)
        try:
            return Result(ok=True, value=handlers[int(job.id)](ctx))
        except Exception as exc:
            return Result(ok=False, error_type=type(exc).__name__, error=str(exc))

    out = run_batch(db, [ClaimedJob(str(i), f"e{i}", {}) for i in range(len(handlers))], run)
    return [result for _, result in sorted(out, key=lambda pair: int(pair[0].id))]


def _failing_block(ctx: JobContext, kind: str) -> None:
    """A ``write_transaction`` block that writes ``kind`` and fails; the handler carries on."""
    try:
        with write_transaction(ctx.db):
            _insert(ctx, kind)
            raise ValueError("the block fails")
    except ValueError:
        pass


def _titles() -> list[str]:
    return sorted(c.title for c in Conversation.select())


def test_a_block_opened_first_costs_no_savepoint_of_its_own(db: Any, sent: list[str]) -> None:
    def job(ctx: JobContext) -> None:
        with write_transaction(ctx.db):
            _insert(ctx, f"c{ctx.job_id}")

    assert all(r.ok for r in _batch(db, [job, job, job]))
    assert sent.count("SAVEPOINT") == 3  # one per job: the batch's
    # left set where releasing is a round trip (the commit ends them all); released on SQLite
    assert sent.count("RELEASE") == (3 if isinstance(db, peewee.SqliteDatabase) else 0)
    assert _titles() == ["c0", "c1", "c2"]


def test_a_job_that_swallows_a_database_error_never_has_the_batch_silently_rolled_back(db: Any) -> None:
    """A handler that catches a failed statement without a savepoint of its own leaves PostgreSQL's
    transaction aborted, and COMMIT would then roll back the whole batch without an error: the
    batch is rolled back as failed instead, and its jobs run again. The other databases keep the
    transaction usable after a failed statement: the batch commits."""
    def ok(ctx: JobContext) -> str:
        with write_transaction(ctx.db):
            _insert(ctx, "ok")
        return "ok"

    def swallows(ctx: JobContext) -> str:
        _insert(ctx, "twice")
        with contextlib.suppress(peewee.IntegrityError):
            _insert(ctx, "twice")  # the same id: a unique violation, caught
        return "ok"

    rolled_back = (False, codec.BATCH_ROLLED_BACK)
    results = _batch(db, [ok, swallows])  # the last job: the batch's commit comes next
    if isinstance(db, peewee.PostgresqlDatabase):
        assert [(r.ok, r.error_type) for r in results] == [rolled_back, rolled_back]
        assert _titles() == []
    else:
        assert [r.ok for r in results] == [True, True] and _titles() == ["ok", "twice"]
    Conversation.delete().execute()
    results = _batch(db, [ok, swallows, ok])
    if isinstance(db, peewee.PostgresqlDatabase):
        # the two jobs of the aborted transaction run again; the last one ran in a new transaction
        assert [(r.ok, r.error_type) for r in results] == [rolled_back, rolled_back, (True, "")]
        assert _titles() == ["ok"]
    else:
        assert [r.ok for r in results] == [True, True, True] and _titles() == ["ok", "ok", "twice"]


def test_savepoints_left_set_undo_only_the_job_that_failed(db: Any, sent: list[str]) -> None:
    """Each job's savepoint is set inside the previous (successful, unreleased) one's: a failure
    rolls back that job alone, before and after jobs that succeeded, and the batch commits the rest."""
    def ok(ctx: JobContext) -> str:
        with write_transaction(ctx.db):
            _insert(ctx, f"c{ctx.job_id}")
        return "ok"

    def fails(ctx: JobContext) -> None:
        with write_transaction(ctx.db):
            _insert(ctx, f"c{ctx.job_id}")
        _insert(ctx, f"after{ctx.job_id}")  # outside the block: undone with the job's savepoint
        raise ValueError("the job fails")

    results = _batch(db, [ok, fails, ok, fails, fails, ok])
    assert [r.ok for r in results] == [True, False, True, False, False, True]
    assert _titles() == ["c0", "c2", "c5"]
    assert sent.count("ROLLBACK") == 3
    assert sent.count("RELEASE") == (3 if isinstance(db, peewee.SqliteDatabase) else 0)


def test_a_failed_adopted_block_is_undone_even_when_the_handler_carries_on(db: Any, sent: list[str]) -> None:
    def job(ctx: JobContext) -> str:
        _failing_block(ctx, "undone")
        _insert(ctx, "kept")  # after the block: stays, and commits with the batch
        return "ok"

    def other(ctx: JobContext) -> None:
        with write_transaction(ctx.db):
            _insert(ctx, "other")

    assert [r.ok for r in _batch(db, [job, other])] == [True, True]
    assert _titles() == ["kept", "other"]
    assert sent.count("SAVEPOINT") == 2


def test_a_block_after_a_statement_nests_a_savepoint_and_undoes_only_itself(db: Any, sent: list[str]) -> None:
    def job(ctx: JobContext) -> str:
        _insert(ctx, "before")
        _failing_block(ctx, "undone")
        return "ok"

    assert [r.ok for r in _batch(db, [job])] == [True]
    assert _titles() == ["before"]
    assert sent.count("SAVEPOINT") == 2  # the batch's and the block's own


def test_a_second_block_of_the_same_job_nests_as_usual(db: Any) -> None:
    def job(ctx: JobContext) -> str:
        with write_transaction(ctx.db):
            _insert(ctx, "first")
        _failing_block(ctx, "second")
        return "ok"

    assert [r.ok for r in _batch(db, [job])] == [True]
    assert _titles() == ["first"]


def test_a_job_that_fails_after_its_adopted_block_leaves_nothing(db: Any) -> None:
    def job(ctx: JobContext) -> None:
        with write_transaction(ctx.db):
            _insert(ctx, "written")
        raise peewee.IntegrityError("the job fails after its block")

    def other(ctx: JobContext) -> None:
        with write_transaction(ctx.db):
            _insert(ctx, "other")

    assert [r.ok for r in _batch(db, [job, other])] == [False, True]
    assert _titles() == ["other"]


def test_outside_a_batch_the_block_is_a_transaction_of_its_own(db: Any, sent: list[str]) -> None:
    ctx = JobContext("alone", "database", 1, Settings(), db_factory=lambda: db, rerunnable=True)
    with write_transaction(db):
        _insert(ctx, "alone")
    assert "SAVEPOINT" not in sent
    assert _titles() == ["alone"]


def test_the_aborted_state_read_is_libpqs() -> None:
    from psycopg.pq import TransactionStatus

    from slimyq.db import savepoints

    assert savepoints._INERROR == TransactionStatus.INERROR
