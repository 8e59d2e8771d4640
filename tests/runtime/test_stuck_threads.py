"""A job whose thread ignores its timeout (a psycopg query blocked on a lock) keeps its slot; the
worker process restarts and only then is the job retried: two attempts never overlap."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis
from harness import (
    Env,
    WorkerProc,
    at,
    attempts,
    canaries,
    conversation_rows,
    conversations,
    leftovers,
    wait_done,
    wait_until,
)

pytestmark = pytest.mark.postgres


def test_a_stuck_attempt_is_retried_only_after_its_process_is_gone(
        tmp_path: Path, redis_url: str, private_pg_url: str, start: Callable[..., WorkerProc]) -> None:
    env = Env.make(tmp_path / "pg", redis_url, private_pg_url,
                   queues={"database": {"timeout": 1, "attempts": 3, "concurrency": 3}})
    conn: redis.Redis = env.conn()
    blocker = psycopg.connect(private_pg_url)
    blocker.execute("LOCK TABLE chat_conversations IN ACCESS EXCLUSIVE MODE")  # held until commit
    (job,) = conversations(env, 1)
    worker = start("database", on=env)
    (first,) = worker.wait_children(1)
    wait_until(lambda: conn.hget(f"rq:job:{job}", "status") == b"started", 30, what="the job to start")
    quick = canaries(env, 4)  # the other slots keep serving while the stuck one waits
    assert wait_done(conn, quick, 30).finished == 4
    # Past its timeout plus the watchdog's grace the process restarts; until it is gone the job
    # is not handed to anyone.
    wait_until(lambda: not first.is_running() or first.status() == "zombie", 60, what="the stuck process to exit")
    blocker.commit()
    blocker.close()
    t = wait_done(conn, [job], 60)
    assert t.finished == 1, t
    a = attempts(conn, job)
    assert [x["outcome"] for x in a][-1] == "finished", a
    stuck = a[0]
    assert stuck["outcome"] == "abandoned" and "thread did not stop" in stuck["error"], a
    for earlier, later in itertools.pairwise(a):
        assert at(earlier["endedAt"]) <= at(later["startedAt"]), a  # no overlap
    assert conversation_rows(private_pg_url) == 1
    assert "ran past its timeout" in worker.log()
    worker.signal(15)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}
    conn.close()
