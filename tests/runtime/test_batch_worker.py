"""The batch transaction through a real ``slimyq worker``: failing jobs share batches with good
ones, and each job's outcome is its own (see test_batch.py for the rules on every database)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import redis
from harness import Env, WorkerProc, attempts, conversation_rows, conversations, enqueue, leftovers, tally


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
