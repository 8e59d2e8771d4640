"""Processes killed with SIGKILL: their jobs run again, soon, and finish exactly once in effect."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import psutil
import pytest
import redis
from harness import (
    Env,
    WorkerProc,
    attempts,
    canaries,
    conversation_rows,
    conversations,
    descendants_alive,
    leftovers,
    status,
    tally,
    wait_done,
    wait_until,
)


def _started(conn: redis.Redis, job_id: str) -> bool:
    return status(conn, job_id) == "started"


@pytest.mark.parametrize("fork", [False, True], ids=["threads", "fork"])
def test_killed_worker_child_job_retried_at_once(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc],
                                                 fork: bool) -> None:
    (job_id,) = canaries(env, 1, "database", sleep=3)
    worker = start("database", *(["--fork"] if fork else []))
    (child,) = worker.wait_children(1)
    wait_until(lambda: _started(conn, job_id), 20, what="the job to start")
    if fork:  # "started" is written when the job is claimed, a moment before its process forks
        wait_until(lambda: child.children(), 20, what="the forked job process")
    grandchildren = [p.pid for p in child.children()]
    assert len(grandchildren) == (1 if fork else 0)
    killed_at = time.monotonic()
    child.send_signal(signal.SIGKILL)
    t = wait_done(conn, [job_id], 30)
    recovered_in = time.monotonic() - killed_at
    assert (t.finished, t.duplicated) == (1, 0), worker.log()[-3000:]
    assert recovered_in < 30
    a = attempts(conn, job_id)
    assert [x["outcome"] for x in a] == ["abandoned", "finished"], a
    assert "died" in a[0]["error"]
    # The forked job process died with its worker: it did not keep running unseen.
    assert descendants_alive(grandchildren) == []
    # The supervisor started a new worker process.
    assert any(c.pid != child.pid for c in worker.children())
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_kill_during_database_load_leaves_one_row_per_job(env: Env, conn: redis.Redis,
                                                          start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"database": {"concurrency": 4}})
    ids = conversations(env, 300) + canaries(env, 40, "database", sleep=0.5)  # canaries: work left to kill
    worker = start("database")
    for _ in range(2):  # kill the worker process twice while it works through the jobs
        (child,) = worker.wait_children(1)
        wait_until(lambda: conn.zcard("rq:wip:database") > 0, 30, 0.01, "jobs in flight")
        time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        wait_until(lambda c=child: all(p.pid != c.pid for p in worker.children()) and worker.children(), 30)
    t = wait_done(conn, ids, 60)
    assert (t.finished, t.failed, t.duplicated, t.pending) == (340, 0, 0, 0), worker.log()[-3000:]
    assert conversation_rows(env.db_url) == 300
    rerun = sum(1 for job_id in ids if len(attempts(conn, job_id)) > 1)
    assert rerun >= 1  # the kills did hit jobs in flight, and those ran again
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_job_rerun_after_its_commit_writes_one_row(env: Env, conn: redis.Redis,
                                                   start: Callable[..., WorkerProc]) -> None:
    """A first run committed its row and died before reporting: the rerun leaves one row."""
    (job_id,) = conversations(env, 1)
    first = start("database", "--burst")
    assert first.wait(60) == 0
    assert conversation_rows(env.db_url) == 1
    # Pretend the completion never happened: the job is back in its queue, as a recovery leaves it.
    conn.delete(f"rq:results:{job_id}")
    conn.hset(f"rq:job:{job_id}", "status", "queued")
    conn.zrem("rq:finished:database", job_id)
    conn.rpush("rq:queue:database", job_id)
    second = start("database", "--burst")
    assert second.wait(60) == 0
    assert tally(conn, [job_id]).finished == 1
    assert conversation_rows(env.db_url) == 1


def test_killed_supervisor_children_exit_and_restart_completes(env: Env, conn: redis.Redis,
                                                               start: Callable[..., WorkerProc]) -> None:
    ids = canaries(env, 30, "chat", sleep=1.0)
    worker = start("chat", "--fork")
    wait_until(lambda: conn.zcard("rq:wip:chat") >= 5, 30, what="5 jobs running")
    tree = [p.pid for p in worker.group()]
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(5)
    # PR_SET_PDEATHSIG: the children notice, finish their running jobs and exit (grace 5 s).
    wait_until(lambda: not descendants_alive(tree), 5 + 5 + 2, what="orphaned worker processes to exit")
    assert wip_clean(conn)
    again = start("chat", "--burst")
    assert again.wait(60) == 0, again.log()[-3000:]
    t = tally(conn, ids)
    assert (t.finished, t.duplicated, t.pending) == (30, 0, 0)
    for job_id in ids:
        assert [x["outcome"] for x in attempts(conn, job_id)] == ["finished"]
    assert leftovers(conn) == {}


def wip_clean(conn: redis.Redis) -> bool:
    return conn.zcard("rq:wip:chat") == 0 and not list(conn.scan_iter("slimyq:claim:*"))


def test_whole_group_killed_jobs_recovered_after_abandoned_after(env: Env, conn: redis.Redis,
                                                                start: Callable[..., WorkerProc]) -> None:
    ids = canaries(env, 12, "audit", sleep=2.0)
    worker = start("audit", "--concurrency", "4")
    wait_until(lambda: conn.zcard("rq:wip:audit") >= 4, 30, what="4 jobs running")
    worker.killpg()
    wait_until(lambda: not worker.group(), 10, what="the worker's processes to die")
    assert conn.zcard("rq:wip:audit") == 4  # stranded: nobody is left to put them back
    killed_at = time.monotonic()
    again = start("audit", "--concurrency", "4")
    t = wait_done(conn, ids, 60)
    assert (t.finished, t.duplicated, t.pending) == (12, 0, 0), again.log()[-3000:]
    assert time.monotonic() - killed_at < 30
    abandoned = [job_id for job_id in ids if attempts(conn, job_id)[0]["outcome"] == "abandoned"]
    assert len(abandoned) == 4
    for job_id in abandoned:
        assert [x["outcome"] for x in attempts(conn, job_id)] == ["abandoned", "finished"]
    again.signal(signal.SIGTERM)
    assert again.wait(30) == 0
    assert leftovers(conn) == {}
    assert psutil.pid_exists(again.pid) is False or again.proc.poll() is not None
