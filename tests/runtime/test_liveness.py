"""Liveness heals itself: a worker that lapsed (stalled past ``abandoned_after``) and came back is
fully registered again, so a job in its claim list is recovered when its host dies later."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis
from harness import Env, WorkerProc, attempts, canaries, leftovers, tally, wait_done, wait_until

CLAIMS = "slimyq:claims:database"


def _name(conn: redis.Redis, worker: WorkerProc) -> str:
    (child,) = worker.wait_children(1)

    def registered() -> str | None:
        for m in conn.smembers(CLAIMS):  # type: ignore[union-attr]
            name = m.decode()
            if f".{worker.pid}.database." in name and conn.hget(f"rq:worker:{name}", "pid") == str(child.pid).encode():
                return name
        return None

    return str(wait_until(registered, 30, what="the worker to register"))


def test_stall_then_resume_then_host_death_loses_nothing(env: Env, conn: redis.Redis,
                                                          start: Callable[..., WorkerProc]) -> None:
    a, b = start("database"), start("database")
    name_a, _ = _name(conn, a), _name(conn, b)
    os.killpg(a.pid, signal.SIGSTOP)  # a stall longer than abandoned_after (3 s)
    try:
        wait_until(lambda: not conn.exists(f"rq:worker:{name_a}") and not conn.sismember(CLAIMS, name_a), 30,
                   what="the stalled worker to lapse and leave the claim set")
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    # Back: key, hash fields and claim-set membership are all there again.
    wait_until(lambda: conn.sismember(CLAIMS, name_a) and conn.exists(f"rq:worker:{name_a}"), 30,
               what="the resumed worker to register again")
    fields = conn.hgetall(f"rq:worker:{name_a}")
    assert {b"birth", b"queues", b"pid", b"last_heartbeat"} <= set(fields), fields  # type: ignore[arg-type]
    assert conn.sismember("rq:workers", f"rq:worker:{name_a}")

    # Its host dies while a job sits in its claim list (where its BLMOVE puts one). b is frozen
    # meanwhile (past its own BLMOVE's 1 s timeout) so that it cannot take the job first.
    os.killpg(a.pid, signal.SIGSTOP)
    os.killpg(b.pid, signal.SIGSTOP)
    time.sleep(1.5)
    (job,) = canaries(env, 1)
    assert conn.lmove("rq:queue:database", f"slimyq:claim:{name_a}", "LEFT", "RIGHT") == job.encode()
    a.killpg()
    os.killpg(b.pid, signal.SIGCONT)
    t = wait_done(conn, [job], 30)  # abandoned_after (3 s) plus a maintenance pass (5 s)
    assert t.finished == 1, t
    more = canaries(env, 5)
    assert wait_done(conn, more, 30).finished == 5
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0
    assert tally(conn, [job, *more]).duplicated == 0
    assert leftovers(conn) == {}


@pytest.mark.parametrize("fork", [False, True], ids=["threads", "fork"])
def test_a_resumed_worker_stops_the_jobs_recovered_from_it(env: Env, conn: redis.Redis,
                                                           start: Callable[..., WorkerProc], fork: bool) -> None:
    (job,) = canaries(env, 1, sleep=8)
    a = start("database", *(["--fork"] if fork else []))
    name_a = _name(conn, a)
    wait_until(lambda: conn.hget(f"rq:job:{job}", "worker_name") == name_a.encode(), 30, what="a to start it")
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        b = start("database")
        name_b = _name(conn, b)
        wait_until(lambda: conn.hget(f"rq:job:{job}", "worker_name") == name_b.encode(), 60,
                   what="b to recover and start the job")
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    wait_until(lambda: "recovered by another worker while this one was stalled" in a.log(), 30,
               what="a to stop its copy")
    assert wait_done(conn, [job], 60).finished == 1
    outcomes = [x["outcome"] for x in attempts(conn, job)]
    assert outcomes == ["abandoned", "finished"], outcomes
    for w in (a, b):
        w.signal(signal.SIGTERM)
        assert w.wait(30) == 0
    assert tally(conn, [job]).duplicated == 0
    assert leftovers(conn) == {}
