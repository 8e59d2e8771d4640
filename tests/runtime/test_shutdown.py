"""SIGTERM: running jobs finish, the rest stay queued; a second SIGTERM puts running jobs back."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis
from harness import Env, WorkerProc, attempts, canaries, leftovers, status, tally, wait_until


@pytest.mark.parametrize("fork", [False, True], ids=["threads", "fork"])
def test_sigterm_finishes_running_jobs_and_leaves_the_rest(env: Env, conn: redis.Redis,
                                                           start: Callable[..., WorkerProc], fork: bool) -> None:
    ids = canaries(env, 20, "database", sleep=1.0)
    worker = start("database", "--concurrency", "5", *(["--fork"] if fork else []))
    wait_until(lambda: conn.zcard("rq:wip:database") == 5, 30, 0.02, "5 jobs claimed")
    time.sleep(0.3)  # claimed jobs start within milliseconds (a fork each with --fork); they run 1 s
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]
    t = tally(conn, ids)
    assert t.duplicated == 0 and t.failed == 0
    assert 5 <= t.finished < 20
    assert leftovers(conn) == {"rq:queue:database": 20 - t.finished}
    for job_id in t.missing:
        assert status(conn, job_id) == "queued"
        assert attempts(conn, job_id) == []  # never started, nothing counted
    queued = {i.decode() for i in conn.lrange("rq:queue:database", 0, -1)}  # type: ignore[union-attr]
    assert queued == set(t.missing)
    assert not worker.group()


def test_second_sigterm_puts_running_jobs_back(env: Env, conn: redis.Redis,
                                              start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"database": {"timeout": 60}})
    ids = canaries(env, 12, "database", sleep=20.0)
    worker = start("database", "--concurrency", "5")
    wait_until(lambda: conn.zcard("rq:wip:database") == 5, 30, 0.02, "5 jobs running")
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    # At once, not after the jobs' 20 s: a stop that waited for them could not exit within 15 s,
    # and none of them may have finished.
    assert worker.wait(15) == 0, worker.log()[-3000:]
    assert not worker.group()
    t = tally(conn, ids)
    assert (t.finished, t.failed) == (0, 0)
    assert leftovers(conn) == {"rq:queue:database": 12}
    for job_id in ids:
        assert status(conn, job_id) == "queued"
        assert attempts(conn, job_id) == []  # a stop is not a failed attempt
    again = start("database", "--burst", "--concurrency", "12")
    assert again.wait(60) == 0
    assert tally(conn, ids).finished == 12
    assert leftovers(conn) == {}


def test_job_longer_than_grace_is_put_back_after_the_grace(env: Env, conn: redis.Redis,
                                                         start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(worker={"shutdown_grace": 1.0})
    (slow,) = canaries(env, 1, "audit", sleep=6.0)
    worker = start("audit")
    wait_until(lambda: status(conn, slow) == "started", 30, 0.02, "the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0, worker.log()[-3000:]
    assert status(conn, slow) == "queued"
    assert leftovers(conn) == {"rq:queue:audit": 1}
    assert not worker.group()


def test_sigint_is_like_sigterm(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.extra["SLIMYQ_LOG_FORMAT"] = "json"
    ids = canaries(env, 4, "chat", sleep=0.5)
    worker = start("chat", "--concurrency", "2")
    # Running, not only claimed: a claimed job that has not started when the signal lands is put
    # back unstarted (a drain finishes what runs), which under load made this test flaky.
    wait_until(lambda: worker.log().count('"job.start"') >= 2, 30, 0.02, "2 jobs running")
    worker.signal(signal.SIGINT)
    assert worker.wait(30) == 0
    t = tally(conn, ids)
    assert t.duplicated == 0 and t.finished >= 2
    assert leftovers(conn) == ({"rq:queue:chat": 4 - t.finished} if t.finished < 4 else {})
