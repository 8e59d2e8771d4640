"""A job past its queue's timeout fails with a timeout error and is retried; the worker goes on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from harness import Env, WorkerProc, attempts, canaries, conversations, enqueue, leftovers, tally, wait_done, wait_until


@pytest.mark.parametrize("fork", [False, True], ids=["threads", "fork"])
def test_timeout_fails_retries_and_worker_keeps_serving(env: Env, conn: redis.Redis,
                                                        start: Callable[..., WorkerProc], fork: bool) -> None:
    env.reconfigure(queues={"chat": {"timeout": 1, "attempts": 2, "backoff_base": 0.2, "concurrency": 2}})
    (slow,) = enqueue(env, "canary", [{"sleepSeconds": 10}], "chat")
    worker = start("chat", *(["--fork"] if fork else []))
    quick = []
    for _ in range(5):  # served meanwhile, on the other slot
        quick += canaries(env, 2, "chat", sleep=0.1)
    t = wait_done(conn, quick, 20)
    assert t.finished == 10, t
    assert wait_done(conn, [slow], 20).failed == 1
    a = attempts(conn, slow)
    assert [x["outcome"] for x in a] == ["retried", "failed"]
    for x in a:
        assert x["errorType"] == "timeout"
        assert "timeout of 1 s" in x["error"]
        assert 900 <= x["durationMs"] < 5000  # stopped at its timeout, not after its 10 s sleep
    (late,) = canaries(env, 1, "chat")
    assert wait_done(conn, [late], 20).finished == 1
    assert worker.proc.poll() is None

    def counts() -> dict[str, int]:
        return {k.decode(): int(v) for k, v in conn.hgetall("slimyq:counts:chat").items()}  # type: ignore[union-attr]

    # Metrics of an idle worker are flushed within a fraction of a second, not at its next job.
    wait_until(lambda: counts().get("canary:completed") == 11, 5, what="metrics to be flushed")
    # The counters agree with the jobs' own attempt records: the slow job's one retry, plus any quick
    # canary whose forked child took longer than the 1 s timeout to start on a loaded machine.
    retried = sum(x["outcome"] == "retried" for j in [slow, *quick, late] for x in attempts(conn, j))
    assert retried >= 1
    assert counts()["canary:retried"] == retried and counts()["canary:failed"] == 1
    worker.signal(15)
    assert worker.wait(30) == 0
    assert tally(conn, [slow, *quick, late]).duplicated == 0
    assert leftovers(conn) == {}


def test_timeouts_landing_at_the_sqlite_writer_lock_leak_nothing(env: Env, conn: redis.Redis,
                                                                 start: Callable[..., WorkerProc]) -> None:
    """Job threads queue on the process's SQLite writer lock while another process holds the
    database; their timeouts land the moment the lock is handed to them. Afterwards every
    transaction takes the lock at once (a leaked lock would make each wait sqlite.WAIT seconds
    and, with a 1 s timeout, fail)."""
    import sqlite3
    import time

    from slimyq.db.sqlite import WAIT

    env.reconfigure(queues={"database": {"timeout": 1, "attempts": 5, "backoff_base": 0.2, "concurrency": 4}})
    (warm,) = conversations(env, 1)  # creates and migrates the SQLite file
    worker = start("database")
    assert wait_done(conn, [warm], 30).finished == 1
    holder = sqlite3.connect(env.db_url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        contended = conversations(env, 8)
        wait_until(lambda: sum(1 for j in contended if attempts(conn, j)) >= 4, 30,
                   what="timeouts while the database is held")
    finally:
        time.sleep(1.5)  # let timeouts pile up on threads waiting for the lock
        holder.execute("ROLLBACK")
        holder.close()
    after = conversations(env, 20)
    t = wait_done(conn, [*contended, *after], 90)
    assert (t.finished, t.failed) == (28, 0), t
    for job_id in after:
        for a in attempts(conn, job_id):
            assert a["durationMs"] < WAIT * 1000, (job_id, a)
    assert worker.proc.poll() is None
    worker.signal(15)
    assert worker.wait(30) == 0


def test_watchdog_alarms_fire_once_on_its_thread_and_a_cancelled_one_never() -> None:
    import threading

    from slimyq.runtime.timeouts import Watchdog

    dog = Watchdog(tick=0.01)
    dog.start()
    try:
        fired: list[str] = []
        done = threading.Event()

        def boom() -> None:
            raise RuntimeError("a bug in an alarm")

        dog.alarm(0.0, boom)  # logged; the watchdog goes on
        cancelled = dog.alarm(0.05, lambda: fired.append("cancelled"))
        dog.cancel(cancelled)
        dog.alarm(0.1, lambda: (fired.append(threading.current_thread().name), done.set()))
        assert done.wait(30)
        wait_until(lambda: not dog._alarms, 30, what="alarms forgotten once fired")
        assert fired == ["slimyq-watchdog"]
    finally:
        dog.stop()


def test_expiring_an_ended_watch_leaves_the_threads_next_watch_alone() -> None:
    """A stop-job reads a job's watch token, the job ends and its thread starts the next one (or
    a batch's commit): the late expire must not hit that."""
    import time

    from slimyq.runtime.timeouts import Watchdog

    dog = Watchdog()
    first = dog.watch(60, lambda: None)
    assert dog.release(first) is False
    second = dog.watch(60, lambda: None)
    assert second != first
    dog.expire(first)  # late: a no-op
    (watch,) = dog._watches.values()
    assert watch.token == second and watch.deadline > time.monotonic() + 30
    dog.expire(second)
    assert watch.deadline <= time.monotonic()
    assert dog.release(second) is False  # the watchdog's thread (not started here) never raised
