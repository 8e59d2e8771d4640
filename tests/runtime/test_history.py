"""Workers record every attempt in the job_runs table (write-behind), flushed on shutdown; a
database that cannot be reached does not use up a job's attempts."""

from __future__ import annotations

from collections.abc import Callable

from harness import Env, WorkerProc, canaries, enqueue, tally
from rq import Queue
from rq.serializers import JSONSerializer

from slimyq.db import connect_url, database_proxy
from slimyq.history.queries import job_runs_for
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result
from slimyq.runtime.outcome import INFRA_DELAY, decide


def test_attempts_land_in_job_runs(tmp_path, redis_url: str, start: Callable[..., WorkerProc]) -> None:
    env = Env.make(tmp_path / "on", redis_url, history=True)
    conn = env.conn()
    (flaky,) = canaries(env, 1, "database", fail=1)
    (ok,) = enqueue(env, "create_conversation", [{"userId": "u7", "title": "kept"}])
    refused = Queue("database", connection=conn, serializer=JSONSerializer).enqueue("os.system", "true").id
    worker = start("database", "--burst", on=env)
    assert worker.wait(60) == 0, worker.log()[-3000:]
    assert tally(conn, [flaky, ok]).finished == 2
    db = connect_url(env.db_url)
    database_proxy.initialize(db)
    try:
        assert [(r.attempt, r.state) for r in job_runs_for(db, flaky)] == [(1, "retried"), (2, "finished")]
        (run,) = job_runs_for(db, ok)
        assert (run.state, run.job_type, run.user_id, run.queue) == ("finished", "create_conversation", "u7",
                                                                    "database")
        assert run.duration_ms is not None and run.started_at is not None and run.enqueued_at is not None
        (bad,) = job_runs_for(db, refused)
        assert (bad.state, bad.error_type) == ("refused", "refused")
        assert "os.system" in (bad.error_message or "")
    finally:
        db.close()


def test_history_off_writes_nothing(tmp_path, redis_url: str, start: Callable[..., WorkerProc]) -> None:
    env = Env.make(tmp_path / "off", redis_url, history=False)
    (job,) = canaries(env, 1, "database")
    worker = start("database", "--burst", on=env)
    assert worker.wait(60) == 0, worker.log()[-3000:]
    db = connect_url(env.db_url)
    database_proxy.initialize(db)
    try:
        assert job_runs_for(db, job) == []
    finally:
        db.close()


def _job(attempts: list[dict[str, object]]) -> ClaimedJob:
    import json

    raw = {"retries_left": b"2", "slimyq_attempts": json.dumps(attempts).encode(), "meta": b'{"type":"canary"}'}
    return ClaimedJob("j1", "e1", raw)


def test_unreachable_database_does_not_use_up_attempts(env: Env) -> None:
    qs = env.settings().queue("database")
    infra = Result(ok=False, error_type="database_unavailable", error="connection refused", infra=True)
    c = decide(_job([]), infra, qs, "w")
    outcome, delay, retries_left = c.args[2], float(c.args[6]), c.args[7]
    assert (outcome, retries_left) == ("retry", 2) and delay >= INFRA_DELAY
    plain = Result(ok=False, error_type="ValueError", error="boom")
    assert decide(_job([]), plain, qs, "w").args[7] == 1
    # ...but not forever: after many database-down tries the normal rules apply again.
    many = [{"errorType": "database_unavailable"}] * 500
    assert decide(_job(many), infra, qs, "w").args[7] == 1
