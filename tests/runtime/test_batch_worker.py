"""The batch transaction through a real ``slimyq worker``: failing jobs share batches with good
ones, and each job's outcome is its own (see test_batch.py for the rules on every database)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis
from harness import (
    Env,
    WorkerProc,
    at,
    attempts,
    conversation_rows,
    conversations,
    enqueue,
    leftovers,
    tally,
    with_test_jobs,
)


def _effect_markers(database_url: str) -> int:
    from slimyq.db import connect_url

    db = connect_url(database_url)
    try:
        return int(db.execute_sql("SELECT COUNT(*) FROM job_effects").fetchone()[0])
    finally:
        db.close()


def test_failing_jobs_in_a_batch_fail_alone(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    good: list[str] = []
    bad: list[str] = []
    for i in range(10):  # interleaved, so every claimed batch holds both kinds
        good += conversations(env, 4, user=f"u{i}")
        bad += enqueue(env, "save_message", [{"conversationId": str(uuid.uuid4()), "userId": "u1", "role": "user",
                                               "content": "to nowhere"}])
    worker = start("database", "--burst", "--concurrency", "10")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert leftovers(conn) == {}
    t_good, t_bad = tally(conn, good), tally(conn, bad)
    assert (t_good.finished, t_good.failed, t_good.duplicated) == (40, 0, 0)
    assert (t_bad.finished, t_bad.failed, t_bad.duplicated) == (0, 10, 0)
    assert conversation_rows(env.db_url) == 40
    assert _effect_markers(env.db_url) == 40  # one marker per good job, none for the failures
    assert [a["outcome"] for a in attempts(conn, bad[0])] == ["failed"]  # access denied: permanent
    assert [a["outcome"] for a in attempts(conn, good[0])] == ["finished"]


def test_without_batching_the_same_jobs_end_the_same(env: Env, conn: redis.Redis,
                                                      start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"database": {"batch_transaction": False}})
    ids = conversations(env, 30)
    worker = start("database", "--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert tally(conn, ids).finished == 30
    assert conversation_rows(env.db_url) == 30 and _effect_markers(env.db_url) == 30


def _history(database_url: str, job_id: str) -> list[tuple[int, str, str | None]]:
    from slimyq.db import connect_url

    db = connect_url(database_url)
    try:
        rows = db.execute_sql(f"SELECT attempt, state, error_type FROM job_runs WHERE job_id = '{job_id}' "
                              "ORDER BY attempt").fetchall()
        return [(int(a), str(s), e) for a, s, e in rows]
    finally:
        db.close()


@pytest.mark.parametrize("swallow", [False, True], ids=["timeout", "timeout-caught-by-the-handler"])
def test_batch_mates_of_a_timed_out_job_are_rerun_and_their_history_shows_the_rerun(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], monkeypatch: pytest.MonkeyPatch,
        swallow: bool) -> None:
    """The real watchdog times out a job inside a batch: the batch-mates that ran before it in the
    same transaction are rolled back and run again, without using up an attempt and labelled as a
    batch rollback (the database was fine); the job history and the metrics show the rerun. A
    handler that catches the timeout and fails otherwise interrupts its batch all the same."""
    # The slow job's own timeout (RQ's ``timeout`` field) is 2 s, the queue's 30 s: the jobs handed to
    # other threads once the batch's 1 s budget is spent wait for the SQLite writer lock the slow job
    # holds until its timeout, and must not time out themselves on a loaded machine.
    with_test_jobs(env, monkeypatch, timeout=30, attempts=1)
    before = enqueue(env, "slow_write", [{"key": f"b{i}"} for i in range(3)])
    slow = enqueue(env, "slow_write", [{"key": "slow", "seconds": 60, "swallow": swallow}])
    conn.hset(f"rq:job:{slow[0]}", "timeout", 2)
    after = enqueue(env, "slow_write", [{"key": f"a{i}"} for i in range(3)])
    worker = start("database", "--burst", "--concurrency", "10")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert leftovers(conn) == {}
    t = tally(conn, before + after)
    assert (t.finished, t.failed, t.duplicated) == (6, 0, 0)
    assert tally(conn, slow).failed == 1
    error_type = "ValueError" if swallow else "timeout"
    assert [a["errorType"] for a in attempts(conn, slow[0])] == [error_type]
    rolled = [job_id for job_id in before if len(attempts(conn, job_id)) > 1]
    assert rolled, "no batch-mate was rolled back: " + worker.log()[-3000:]
    for job_id in rolled:
        runs = attempts(conn, job_id)
        assert [(a["attempt"], a["outcome"]) for a in runs] == [(1, "retried"), (1, "finished")]
        assert runs[0]["errorType"] == "batch_rolled_back"
        assert _history(env.db_url, job_id) == [(1, "finished", None)]  # the rerun's row, not the rollback's
    assert _history(env.db_url, slow[0]) == [(1, "failed", error_type)]
    counts = {k.decode(): int(v) for k, v in conn.hgetall("slimyq:counts:database").items()}
    assert counts.get("slow_write:completed") == 6 and counts.get("slow_write:failed") == 1
    assert "slow_write:retried" not in counts  # a batch-mate's rollback is no attempt of its own


def test_a_slow_job_does_not_hold_up_its_batch_mates_not_started_yet(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim's first job is slow: once the batch's budget (1 s: less than a tenth of the timeout)
    is spent, the jobs it had not started run on the worker's other threads and end while it still
    runs (before, they waited for it on its thread)."""
    with_test_jobs(env, monkeypatch, timeout=20)
    slow = enqueue(env, "slow_write", [{"key": "slow", "seconds": 8}])
    reads = enqueue(env, "get_conversations", [{"userId": f"u{i}"} for i in range(8)])
    worker = start("database", "--burst", "--concurrency", "10")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert tally(conn, slow + reads).finished == 9
    slow_end = at(attempts(conn, slow[0])[-1]["endedAt"])
    for job_id in reads:
        (run,) = attempts(conn, job_id)
        assert at(run["endedAt"]) < slow_end, (run, slow_end)
