"""One write transaction per claimed batch, a savepoint per job: the rules, on every database.

The jobs here run the real effect-once path (``once()`` and the database handlers' models), in a
real transaction on SQLite, PostgreSQL and MariaDB (the ``db`` fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee
import pytest

from slimyq.config import Settings
from slimyq.db.models import Conversation, JobEffect, utcnow
from slimyq.jobs.base import JobContext
from slimyq.jobs.effects import once
from slimyq.runtime.batch import run_batch
from slimyq.runtime.codec import INFRA_ERROR, ClaimedJob
from slimyq.runtime.execute import Result

Handler = Callable[[JobContext], Any]


def _job(job_id: str) -> ClaimedJob:
    return ClaimedJob(job_id, f"e-{job_id}", {})


def _create(title: str) -> Handler:
    """create_conversation's shape: an insert and its effect-once marker."""

    def handler(ctx: JobContext) -> Any:
        def apply() -> dict[str, Any]:
            now = utcnow()
            Conversation.insert(id=ctx.derived_id("c"), user_id="u1", title=title, personality_mode="helpful",
                                created_at=now, updated_at=now).execute()
            return {"title": title}

        return once(ctx, "create", apply)

    return handler


def _write_then_fail(ctx: JobContext) -> Any:
    """Writes outside and inside its effect-once block, then fails: none of it may stay."""
    now = utcnow()
    Conversation.insert(id=ctx.derived_id("outside"), user_id="u1", title="outside", personality_mode="helpful",
                        created_at=now, updated_at=now).execute()

    def apply() -> None:
        Conversation.insert(id=ctx.derived_id("c"), user_id="u1", title="inside", personality_mode="helpful",
                            created_at=now, updated_at=now).execute()
        raise ValueError("the job's own failure")

    once(ctx, "create", apply)


class Runner:
    """Runs jobs as the worker does (a job's error becomes a failed Result, never raises)."""

    def __init__(self, db: Any, handlers: dict[str, Handler]) -> None:
        self.db, self.handlers = db, handlers
        self.ran: list[str] = []

    def __call__(self, job: ClaimedJob) -> Result | None:
        handler = self.handlers[job.id]
        if handler is SKIP:
            return None
        self.ran.append(job.id)
        ctx = JobContext(job.id, "database", 1, Settings(), db_factory=lambda: self.db, rerunnable=True)
        try:
            return Result(ok=True, value=handler(ctx))
        except TimeoutSignal:
            return Result(ok=False, error_type="timeout", error="job exceeded its timeout")
        except Exception as exc:
            return Result(ok=False, error_type=type(exc).__name__, error=str(exc))

    def batch(self, ids: list[str]) -> dict[str, Result]:
        out = run_batch(self.db, [_job(i) for i in ids], self)
        assert len(out) == len({job.id for job, _ in out}), "a job reported twice"
        return {job.id: result for job, result in out}


class TimeoutSignal(Exception):
    """Stands for the JobTimeout the watchdog raises into a job's thread."""


def SKIP(ctx: JobContext) -> Any:  # a marker handler: the job is not started
    raise AssertionError("a skipped job ran")


def _titles(db: Any) -> list[str]:
    return sorted(c.title for c in Conversation.select())


def _markers() -> set[str]:
    return {row.job_id for row in JobEffect.select()}


def _count_commits(db: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    commits: list[int] = []
    real = db.commit

    def commit() -> None:
        commits.append(1)
        real()

    monkeypatch.setattr(db, "commit", commit)
    return commits


def _no_transaction_left(db: Any) -> None:
    assert not db.in_transaction()
    assert db._state.transactions == []
    if hasattr(db, "_owned"):  # SQLite: the writer lock is free again
        assert not db._owned()


def test_one_commit_for_the_batch_and_a_failing_job_rolls_back_only_its_own_writes(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    commits = _count_commits(db, monkeypatch)
    runner = Runner(db, {"a": _create("a"), "b": _write_then_fail, "c": _create("c")})
    results = runner.batch(["a", "b", "c"])
    assert results["a"].ok and results["c"].ok
    assert not results["b"].ok and results["b"].error == "the job's own failure"
    assert len(commits) == 1
    _no_transaction_left(db)
    assert _titles(db) == ["a", "c"]  # b's writes, in and outside its effect-once block, are gone
    assert _markers() == {"a", "c"}


def test_a_failed_commit_retries_every_job_and_keeps_nothing(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = db.commit
    calls: list[int] = []

    def failing_commit() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise peewee.OperationalError("disk I/O error")
        real()

    monkeypatch.setattr(db, "commit", failing_commit)
    runner = Runner(db, {"a": _create("a"), "b": _write_then_fail, "c": _create("c")})
    results = runner.batch(["a", "b", "c"])
    # No job counts as done: the ones that succeeded are retried without using up an attempt;
    # the one that failed on its own keeps its own failure.
    for job_id in ("a", "c"):
        assert not results[job_id].ok and results[job_id].infra
        assert results[job_id].error_type == INFRA_ERROR and "disk I/O error" in results[job_id].error
    assert results["b"].error == "the job's own failure"
    _no_transaction_left(db)
    assert _titles(db) == [] and _markers() == set()
    # The retry runs for real (no marker stayed behind) and writes once.
    again = runner.batch(["a", "c"])
    assert again["a"].ok and again["c"].ok
    assert _titles(db) == ["a", "c"] and _markers() == {"a", "c"}


def test_effect_once_holds_across_batches(db: Any) -> None:
    runner = Runner(db, {"a": _create("first"), "b": _create("b")})
    first = runner.batch(["a", "b"])
    runner.handlers["a"] = _create("second")  # a redelivery of "a" must not write again
    second = runner.batch(["a"])
    assert second["a"].ok and second["a"].value == first["a"].value == {"title": "first"}
    assert _titles(db) == ["b", "first"]
    assert JobEffect.select().where(JobEffect.job_id == "a").count() == 1


def test_an_interrupted_job_rolls_the_batch_back_and_the_rest_goes_on(db: Any) -> None:
    def interrupted(ctx: JobContext) -> Any:
        _create("interrupted")(ctx)
        raise TimeoutSignal

    runner = Runner(db, {"a": _create("a"), "b": interrupted, "c": _create("c")})
    results = runner.batch(["a", "b", "c"])
    assert results["b"].error_type == "timeout"
    assert results["a"].infra and not results["a"].ok  # rolled back with the transaction: retried
    assert results["c"].ok  # ran in a new transaction, committed
    _no_transaction_left(db)
    assert _titles(db) == ["c"] and _markers() == {"c"}


def test_a_job_not_started_is_not_reported(db: Any) -> None:
    runner = Runner(db, {"a": _create("a"), "b": SKIP, "c": _create("c")})
    results = runner.batch(["a", "b", "c"])
    assert set(results) == {"a", "c"} and runner.ran == ["a", "c"]
    assert _titles(db) == ["a", "c"]


def test_when_the_transaction_cannot_begin_the_jobs_run_one_by_one(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = db.begin
    state = {"fail": True}

    def begin(*args: Any, **kwargs: Any) -> None:
        if state.pop("fail", False):
            raise peewee.OperationalError("could not connect")
        real(*args, **kwargs)

    monkeypatch.setattr(db, "begin", begin)
    runner = Runner(db, {"a": _create("a"), "b": _create("b")})
    results = runner.batch(["a", "b"])
    # Each job ran on its own (its once() opened its own transaction) and was reported as it ended.
    assert results["a"].ok and results["b"].ok and runner.ran == ["a", "b"]
    _no_transaction_left(db)
    assert _titles(db) == ["a", "b"] and _markers() == {"a", "b"}


def _claimed(job_id: str, job_type: str) -> ClaimedJob:
    return ClaimedJob(job_id, f"e-{job_id}", {"meta": f'{{"type":"{job_type}"}}'.encode()})


def test_only_the_queues_own_job_types_are_batched() -> None:
    from slimyq.runtime.batch import split

    claimed = _claimed

    jobs = [claimed("a", "create_conversation"), claimed("b", "canary"), claimed("c", "save_message"),
            claimed("d", "no_such_type")]
    alone, batch = split(jobs, "database")
    assert [j.id for j in batch] == ["a", "c"]
    assert [j.id for j in alone] == ["b", "d"]  # the canary sleeps; an unknown type is refused alone
    # One batchable job is no batch; another queue's types are not this queue's.
    assert split(jobs[:2], "database") == (jobs[:2], [])
    assert split(jobs, "chat") == (jobs, [])


def _team_write(p: Any, ctx: JobContext) -> None:
    """A team's job type that was not declared batch-safe."""


def _team_batched(p: Any, ctx: JobContext) -> None:
    """A team's job type declared batch-safe."""


def test_only_job_types_declared_batchable_are_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat job's OpenAI call, or a team's type that was not declared batch-safe, never shares a
    transaction a batch-mate's rollback would undo (and so run again)."""
    from slimyq.jobs import registry
    from slimyq.jobs.registry import job_type
    from slimyq.payloads.common import Payload
    from slimyq.runtime.batch import split

    class Nothing(Payload):
        pass

    registry.all_types()  # slimyq's own types loaded into the real registry first, not into the copy
    monkeypatch.setattr(registry, "JOBS", dict(registry.JOBS))
    monkeypatch.setattr(registry, "_BY_FUNC", dict(registry._BY_FUNC))
    job_type("team_write", queue="database", payload=Nothing)(_team_write)
    job_type("team_batched", queue="database", payload=Nothing, batchable=True)(_team_batched)
    batchable = {jt.name for jt in registry.all_types() if jt.batchable and not jt.func_name.startswith("slimyq_test")}
    assert batchable == {"create_conversation", "save_message", "update_conversation", "delete_conversation",
                         "get_conversations", "get_messages", "team_batched"}
    chat = [_claimed("a", "chat_bot_interaction"), _claimed("b", "chat_bot_interaction")]
    assert split(chat, "chat") == (chat, [])  # even with batch_transaction on for the chat queue
    audit = [_claimed("a", "audit_cleanup"), _claimed("b", "log_event")]
    assert split(audit, "audit") == (audit, [])
    mixed = [_claimed("a", "team_write"), _claimed("b", "save_message"), _claimed("c", "team_batched")]
    alone, batch = split(mixed, "database")
    assert [j.id for j in alone] == ["a"] and [j.id for j in batch] == ["b", "c"]


def _bare_worker(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[str, Result]]]:
    """A QueueWorker whose executor methods are called directly; returns it and the outcomes it hands over."""
    from slimyq.db import connect_url, migrate
    from slimyq.runtime.worker import QueueWorker

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path)
    worker = QueueWorker(settings, "database", concurrency=3, conn=object())  # type: ignore[arg-type]
    handed: list[tuple[str, Result]] = []

    class Completer:
        def put(self, outcomes: list[tuple[ClaimedJob, Result]]) -> None:
            handed.extend((job.id, result) for job, result in outcomes)

    class Commands:
        def __init__(self) -> None:
            self.children: dict[str, int] = {}

        def outcome(self, member: str, result: Result) -> Result:
            return result

    database = connect_url(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(database)  # as the worker's start does: a batch looks its jobs' effect-once markers up
    monkeypatch.setattr(worker, "database", lambda: database)
    worker.completer = Completer()  # type: ignore[assignment]
    worker.commands = Commands()  # type: ignore[assignment]
    return worker, handed


def _claimed_batch(worker: Any, jobs: list[ClaimedJob]) -> None:
    """Claim ``jobs`` as the fetch loop does; the test runs them as a batch itself."""
    worker._dispatch(jobs)
    _todo(worker)


def _todo(worker: Any) -> list[ClaimedJob]:
    """Empty the executor queue: what the worker's threads would take next."""
    items = []
    while not worker._todo.empty():
        items.append(worker._todo.get_nowait())
    return items


def _execute(worker: Any, items: list[ClaimedJob]) -> None:
    """What an executor thread does with single jobs."""
    for item in items:
        if worker._begin(item):
            worker._end(item, worker._attempt(item))


def _ok(job: ClaimedJob) -> Result:
    return Result(ok=True, value=job.id, job_type="save_message")


def test_a_batch_that_fails_on_a_bug_retries_its_jobs_and_frees_their_slots(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's safety net: run_batch raising (a bug, not a job) must not leave slots taken;
    what ran is retried, what did not start runs on its own."""
    from slimyq.runtime import batch as batch_mod

    worker, handed = _bare_worker(tmp_path, monkeypatch)
    jobs = [_job("a"), _job("b"), _job("c")]
    _claimed_batch(worker, jobs)
    assert worker.busy == 3

    def broken(db: Any, jobs: Any, run: Any, *_: Any, **__: Any) -> Any:
        run(jobs.next())  # one job ran (uncommitted), then the batch code fails
        raise RuntimeError("a bug")

    monkeypatch.setattr(batch_mod, "run_batch", broken)
    monkeypatch.setattr(worker, "_attempt", _ok)
    worker.batches.execute(jobs)
    assert [job_id for job_id, _ in handed] == ["a"]  # nothing counts as done: retried, no attempt used
    assert not handed[0][1].ok and handed[0][1].infra and "a bug" in handed[0][1].error
    assert not worker._running and not worker._uncommitted and worker.busy == 2
    rest = _todo(worker)
    assert [job.id for job in rest] == ["b", "c"]  # each on its own, for the next free thread
    _execute(worker, rest)
    assert worker.busy == 0 and not worker._queued
    assert [job_id for job_id, r in handed[1:] if r.ok] == ["b", "c"]


def test_a_batch_that_fails_on_a_bug_after_skipping_a_job_counts_its_slot_once(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job run_batch already skipped (stopping) must not be begun, and its slot freed, again."""
    from slimyq.runtime import batch as batch_mod

    worker, handed = _bare_worker(tmp_path, monkeypatch)
    jobs = [_job("a"), _job("b"), _job("c")]
    _claimed_batch(worker, jobs)
    worker.stop_requested_at = 0.0  # a stop came in: nothing starts any more

    def broken(db: Any, jobs: Any, run: Any, *_: Any, **__: Any) -> Any:
        assert run(jobs.next()) is None  # skipped: its slot is free
        raise RuntimeError("a bug")

    monkeypatch.setattr(batch_mod, "run_batch", broken)
    worker.batches.execute(jobs)
    _execute(worker, _todo(worker))
    assert worker.busy == 0 and not worker._queued and not worker._running
    assert handed == []  # none started: they go back to the queue when the worker exits


def test_a_batch_job_taken_over_before_the_commit_is_not_committed_nor_reported_here(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """This worker stalled; another recovered job "a", which had run here but was not committed
    yet: the batch's transaction is called off (the other worker's run is the one that counts)."""
    worker, handed = _bare_worker(tmp_path, monkeypatch)
    database = worker.database()
    commits = _count_commits(database, monkeypatch)
    jobs = [_job("a"), _job("b"), _job("c")]
    _claimed_batch(worker, jobs)

    def attempt(job: ClaimedJob) -> Result:
        if job.id == "b":  # while b runs, the heartbeat learns a was recovered elsewhere
            worker.taken_over([jobs[0].member])
        return Result(ok=True, value=job.id, job_type="save_message")

    monkeypatch.setattr(worker, "_attempt", attempt)
    worker.batches.execute(jobs)
    assert commits == []  # nothing of the transaction holding a was committed
    assert sorted(job_id for job_id, _ in handed) == ["b", "c"]  # a is the other worker's to report
    for _, result in handed:  # b and c are run again, without using up an attempt
        assert not result.ok and result.infra
    assert worker.busy == 0 and not worker._uncommitted and not worker._taken
    assert set(worker.inflight) == {jobs[1].member, jobs[2].member}  # until the completer writes them


def test_each_transaction_is_reported_as_it_ends_and_a_spent_budget_hands_the_rest_back(db: Any) -> None:
    """Outcomes are reported per transaction, before the next job starts (not at the end of the
    batch); what is taken back (the budget's alarm does it in the worker) is not run here."""
    from slimyq.runtime.batch import Jobs

    events: list[str] = []
    jobs = Jobs([_job(i) for i in "abcde"])
    handed_back: list[str] = []

    def interrupted(ctx: JobContext) -> Any:
        raise TimeoutSignal

    def spend_budget(ctx: JobContext) -> Any:
        handed_back.extend(job.id for job in jobs.take_rest())
        return _create("d")(ctx)

    runner = Runner(db, {"a": _create("a"), "b": interrupted, "c": spend_budget, "d": _create("x"),
                         "e": _create("x")})

    def run(job: ClaimedJob) -> Result | None:
        events.append(f"run {job.id}")
        return runner(job)

    def report(outcomes: list[tuple[ClaimedJob, Result]]) -> None:
        events.append("report " + " ".join(f"{job.id}:{'ok' if r.ok else r.error_type}" for job, r in outcomes))
        assert not db.in_transaction()  # reported once its transaction has ended

    assert run_batch(db, jobs, run, report=report) == []
    assert events == ["run a", "run b", "report a:batch_rolled_back b:timeout", "run c", "report c:ok"]
    assert handed_back == ["d", "e"]
    _no_transaction_left(db)
    assert _titles(db) == ["d"] and _markers() == {"c"}


def test_a_commit_that_runs_past_the_timeout_is_stopped_and_its_jobs_are_rerun(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real watchdog bounds a batch's commit by the queue's timeout, like a job: the commit is
    interrupted, nothing of the batch stays, each job is retried without using up an attempt."""
    import time

    from slimyq.config import QueueSettings
    from slimyq.runtime.timeouts import Watchdog

    worker, handed = _bare_worker(tmp_path, monkeypatch)
    worker.qs = QueueSettings(concurrency=3, timeout=1, batch_transaction=True)
    worker.watchdog = Watchdog(tick=0.01)
    worker.watchdog.start()
    database = worker.database()
    real = database.commit

    def slow_commit() -> None:
        while True:  # Python code: the timeout lands here
            time.sleep(0.01)

    monkeypatch.setattr(database, "commit", slow_commit)
    monkeypatch.setattr(worker, "_attempt", _ok)
    jobs = [_job("a"), _job("b")]
    _claimed_batch(worker, jobs)
    try:
        worker.batches.execute(jobs)
    finally:
        worker.watchdog.stop()
    monkeypatch.setattr(database, "commit", real)
    assert sorted(job_id for job_id, _ in handed) == ["a", "b"]
    for _, result in handed:
        assert not result.ok and result.infra and result.error_type == "batch_rolled_back"
        assert "the batch's own statements (markers, commit) exceeded 1 s" in result.error
    assert worker.busy == 0 and not worker._uncommitted and worker.exit_code == 0
    _no_transaction_left(database)


def test_a_deadlocked_batch_is_reported_in_claim_order_and_the_rest_goes_on(db: Any) -> None:
    """The victim's job (a conflict: the database rolled its transaction back) ends the batch: the
    jobs before it, failed or not, are reported in the order they were claimed (they go back to the
    front of the queue in that order), the jobs after it run in a new transaction."""
    from slimyq.runtime.codec import BATCH_ROLLED_BACK, CONFLICT_ERROR

    runner = Runner(db, {"a": _create("a"), "b": _write_then_fail, "c": _create("c"), "v": _create("v"),
                         "d": _create("d")})

    def run(job: ClaimedJob) -> Result | None:
        result = runner(job)
        if job.id == "v":  # as execute.run classifies a deadlock met by the handler
            return Result(ok=False, error_type=CONFLICT_ERROR, error="deadlock detected", infra=True)
        return result

    out = run_batch(db, [_job(i) for i in "abcvd"], run)
    assert [(job.id, r.error_type or "ok") for job, r in out] == [
        ("a", BATCH_ROLLED_BACK), ("b", "ValueError"), ("c", BATCH_ROLLED_BACK), ("v", CONFLICT_ERROR), ("d", "ok")]
    _no_transaction_left(db)
    assert _titles(db) == ["d"] and _markers() == {"d"}


# ----------------------------------------------------------------------------- effect-once markers


def _marker_statements(db: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements sent on ``job_effects``, as 'SELECT' or 'INSERT'."""
    seen: list[str] = []
    real = db.execute_sql

    def execute_sql(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if "job_effects" in sql:
            seen.append(sql.lstrip().split(None, 1)[0].upper())
        return real(sql, params, *args, **kwargs)

    monkeypatch.setitem(vars(db), "execute_sql", execute_sql)
    return seen


def test_a_batch_looks_its_markers_up_in_one_statement_and_writes_them_in_one(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(db, {"a": _create("a"), "b": _write_then_fail, "c": _create("c"), "d": _create("d")})
    seen = _marker_statements(db, monkeypatch)
    results = runner.batch(["a", "b", "c", "d"])
    assert [job_id for job_id in "abcd" if results[job_id].ok] == ["a", "c", "d"]
    # Not one marker statement per job: one lookup for the batch, one for the failing job (another
    # run of it may have committed since: its result would be the answer), one write.
    assert seen == ["SELECT", "SELECT", "INSERT"]
    assert _markers() == {"a", "c", "d"} and _titles(db) == ["a", "c", "d"]


def test_a_rerun_in_a_batch_returns_its_first_result_and_writes_nothing(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(db, {"a": _create("first"), "b": _create("b")})
    runner.batch(["a", "b"])
    runner.handlers.update({"a": _create("second"), "b": _create("b again"), "c": _create("c")})
    seen = _marker_statements(db, monkeypatch)
    again = runner.batch(["a", "b", "c"])
    assert again["a"].value == {"title": "first"} and again["b"].value == {"title": "b"}
    assert again["c"].value == {"title": "c"}
    assert seen == ["SELECT", "INSERT"]
    assert _titles(db) == ["b", "c", "first"]
    assert JobEffect.select().where(JobEffect.job_id.in_(["a", "b"])).count() == 2


def _once_then_fail(ctx: JobContext) -> Any:
    """Its effect-once block succeeds, then the job fails: the block's writes and marker go too."""
    _create("once then fail")(ctx)
    raise ValueError("failed after its block")


def _block_rolled_back_by_the_handler(ctx: JobContext) -> Any:
    """Its effect-once block is inside a transaction block of its own that it rolls back and goes
    on: the job succeeds, but its effect did not happen, so no marker may say it did."""
    try:
        with ctx.db.atomic():
            _create("rolled back by the handler")(ctx)
            raise ValueError("changed its mind")
    except ValueError:
        return "went on"


def _twice(ctx: JobContext) -> Any:
    """One job, the same effect twice: the second block returns the first's result."""
    first = _create("twice")(ctx)
    return first, _create("not written")(ctx)


def test_markers_of_a_batch_follow_their_jobs_rollbacks(db: Any) -> None:
    runner = Runner(db, {"a": _create("a"), "f": _once_then_fail, "h": _block_rolled_back_by_the_handler,
                         "t": _twice, "z": _create("z")})
    results = runner.batch(["a", "f", "h", "t", "z"])
    assert results["f"].error == "failed after its block"
    assert results["h"].ok and results["h"].value == "went on"
    assert results["t"].value == ({"title": "twice"}, {"title": "twice"})
    assert _titles(db) == ["a", "twice", "z"] and _markers() == {"a", "t", "z"}
    # Their retries run for real: nothing says they happened.
    runner.handlers.update({"f": _create("f"), "h": _create("h")})
    again = runner.batch(["f", "h"])
    assert again["f"].value == {"title": "f"} and again["h"].value == {"title": "h"}
    assert _titles(db) == ["a", "f", "h", "twice", "z"]


def test_a_marker_another_run_commits_during_the_batch_rolls_it_back_and_the_retry_finds_it(
        db: Any, database_url: str) -> None:
    """Two runs of one job at once (a takeover): the other run commits "b"'s marker after this
    batch looked its markers up. The marker's primary key fails this batch's write of them: no job
    of it is done, each is retried without using up an attempt, and the retry returns the other
    run's result for "b" and runs the rest for real."""
    from slimyq.db import connect_url
    from slimyq.runtime.codec import BATCH_ROLLED_BACK

    def other_run_commits_b(ctx: JobContext) -> Any:
        other = connect_url(database_url)  # another worker's connection
        try:
            with other.bind_ctx([JobEffect]), other.atomic():
                JobEffect.insert(job_id="b", effect="create", result={"title": "elsewhere"},
                                 created_at=utcnow()).execute()
        finally:
            other.close()
        return _create("a")(ctx)

    if isinstance(db, peewee.SqliteDatabase):
        pytest.skip("SQLite's batch holds the writer lock: no other run can commit during it")
    runner = Runner(db, {"a": other_run_commits_b, "b": _create("b here"), "c": _create("c")})
    results = runner.batch(["a", "b", "c"])
    for job_id in "abc":
        assert not results[job_id].ok and results[job_id].infra and results[job_id].error_type == BATCH_ROLLED_BACK
    _no_transaction_left(db)
    assert _titles(db) == [] and _markers() == {"b"}
    runner.handlers["a"] = _create("a")
    again = runner.batch(["a", "b", "c"])
    assert again["b"].value == {"title": "elsewhere"}
    assert again["a"].ok and again["c"].ok
    assert _titles(db) == ["a", "c"] and _markers() == {"a", "b", "c"}


def _returning(value: Any, title: str) -> Handler:
    def handler(ctx: JobContext) -> Any:
        def apply() -> Any:
            now = utcnow()
            Conversation.insert(id=ctx.derived_id("c"), user_id="u1", title=title, personality_mode="helpful",
                                created_at=now, updated_at=now).execute()
            return value

        return once(ctx, "create", apply)

    return handler


def test_a_result_that_cannot_be_stored_fails_its_own_job_only(db: Any) -> None:
    import datetime as dt

    runner = Runner(db, {"a": _create("a"), "bad": _returning(dt.datetime(2026, 1, 1), "bad"), "c": _create("c")})
    results = runner.batch(["a", "bad", "c"])
    assert results["a"].ok and results["c"].ok
    assert not results["bad"].ok and results["bad"].error_type == "TypeError"
    assert _titles(db) == ["a", "c"] and _markers() == {"a", "c"}


def test_a_block_that_returns_nothing_is_deferred_and_done_once(db: Any) -> None:
    runner = Runner(db, {"a": _create("a"), "none": _returning(None, "none"), "c": _create("c")})
    results = runner.batch(["a", "none", "c"])
    assert all(r.ok for r in results.values()) and results["none"].value is None
    assert _markers() == {"a", "none", "c"}
    assert runner.batch(["none", "a"])["none"].value is None  # the rerun: the first result, nothing applied
    assert _titles(db) == ["a", "c", "none"]


def test_an_unusual_job_id_writes_its_marker_at_once_and_the_batch_commits(db: Any) -> None:
    odd = "odd.id with spaces"  # not an id RQ makes (a plain client may): its marker is not deferred
    runner = Runner(db, {"a": _create("a"), odd: _create("odd"), "c": _create("c")})
    results = runner.batch(["a", odd, "c"])
    assert all(r.ok for r in results.values())
    assert _markers() == {"a", odd, "c"}
    runner.handlers[odd] = _create("odd again")
    assert runner.batch([odd, "a"])[odd].value == {"title": "odd"}


def test_the_stored_result_is_the_one_once_returned(db: Any) -> None:
    def changes_it_after(ctx: JobContext) -> Any:
        out = _create("x")(ctx)
        out["changed"] = "after the block"
        return out

    runner = Runner(db, {"a": changes_it_after, "b": _create("b")})
    runner.batch(["a", "b"])
    assert JobEffect.get(JobEffect.job_id == "a").result == {"title": "x"}


def test_a_rerun_of_a_repeated_effect_writes_nothing(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun of a job with the same effect twice gets the first result both times and applies
    nothing (whose marker would fail the batch, again and again)."""
    runner = Runner(db, {"t": _twice, "z": _create("z")})
    first = runner.batch(["t", "z"])
    assert first["t"].ok and first["z"].ok
    runner.handlers["z"] = _create("z2")
    seen = _marker_statements(db, monkeypatch)
    again = runner.batch(["t", "z"])
    assert again["t"].value == ({"title": "twice"}, {"title": "twice"}) and again["z"].value == {"title": "z"}
    assert seen == ["SELECT"]  # nothing new to write, nothing rolled back
    assert _titles(db) == ["twice", "z"] and _markers() == {"t", "z"}


def test_more_markers_than_a_statement_takes_go_in_several(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimyq.jobs.effects import ROWS

    ids = [f"j{i}" for i in range(ROWS * 2 + 5)]
    runner = Runner(db, {i: _create(i) for i in ids})
    seen = _marker_statements(db, monkeypatch)
    results = runner.batch(ids)
    assert all(r.ok for r in results.values())
    assert seen == ["SELECT"] * 3 + ["INSERT"] * 3
    assert _markers() == set(ids)


def test_when_the_markers_cannot_be_looked_up_the_jobs_run_one_by_one(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimyq.jobs.effects import _deferred

    real = db.execute_sql
    state = {"fail": True}

    def execute_sql(sql: str, params: Any = None) -> Any:
        if "job_effects" in sql and " IN " in sql.upper() and state.pop("fail", False):
            raise peewee.OperationalError("canceling statement due to lock timeout")
        return real(sql, params)

    monkeypatch.setitem(vars(db), "execute_sql", execute_sql)
    runner = Runner(db, {"a": _create("a"), "b": _create("b")})
    results = runner.batch(["a", "b"])
    assert results["a"].ok and results["b"].ok and runner.ran == ["a", "b"]
    _no_transaction_left(db)
    assert _titles(db) == ["a", "b"] and _markers() == {"a", "b"} and _deferred.now is None


def test_no_batch_is_left_deferring_after_an_interrupted_one(db: Any) -> None:
    from slimyq.jobs.effects import _deferred

    def interrupted(ctx: JobContext) -> Any:
        _create("interrupted")(ctx)
        raise TimeoutSignal

    Runner(db, {"a": _create("a"), "b": interrupted}).batch(["a", "b"])
    assert _deferred.now is None
    assert Runner(db, {"c": _create("c")}).batch(["c"])["c"].ok  # alone: its marker at once
    assert _markers() == {"c"}


def test_results_a_database_might_refuse_are_written_at_once_and_fail_their_own_job_only(db: Any) -> None:
    from slimyq.jobs.effects import STORED_MOST

    big = "x" * (70 * 1024)  # over MySQL's TEXT: refused there (strict mode), stored elsewhere
    runner = Runner(db, {"a": _create("a"), "surrogate": _returning({"t": "\ud800"}, "s"),
                         "big": _returning({"t": big}, "big"), "c": _create("c")})
    results = runner.batch(["a", "surrogate", "big", "c"])
    assert results["a"].ok and results["c"].ok  # never rolled back for a batch-mate's marker
    assert not results["surrogate"].ok
    assert results["big"].ok == (not isinstance(db, peewee.MySQLDatabase)) and len(big) > STORED_MOST
    assert _markers() == {"a", "c"} | ({"big"} if results["big"].ok else set())


def test_after_a_failed_write_of_markers_the_batchs_jobs_are_not_deferred_again(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something the database refused that nothing foresaw: the batch is rolled back (retried, no
    attempt used) and its jobs' next batch writes each marker at once (a refusal would fail its
    own job, not its batch-mates again and again)."""
    from slimyq.jobs.effects import Deferred
    from slimyq.runtime import batch as batch_mod
    from slimyq.runtime.codec import BATCH_ROLLED_BACK

    assert "u1" not in batch_mod._undeferred

    real = Deferred.flush
    calls: list[int] = []

    def refused(self: Deferred) -> None:
        calls.append(1)
        raise peewee.DataError("value too long for type character varying(128)")

    monkeypatch.setattr(Deferred, "flush", refused)
    runner = Runner(db, {"u1": _create("u1"), "u2": _create("u2")})
    first = runner.batch(["u1", "u2"])
    assert all(r.error_type == BATCH_ROLLED_BACK for r in first.values()) and calls == [1]
    monkeypatch.setattr(Deferred, "flush", real)
    seen = _marker_statements(db, monkeypatch)
    again = runner.batch(["u1", "u2"])
    assert all(r.ok for r in again.values()) and calls == [1]
    assert seen.count("INSERT") == 2  # one per job, at once
    assert _markers() == {"u1", "u2"}
