"""Valkey stopped and restarted (AOF), connections killed, the server stalled: workers wait and
reconnect, no job is lost, duplicated or left started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from harness import (
    Env,
    Valkey,
    WorkerProc,
    attempts,
    canaries,
    conversation_rows,
    conversations,
    dump,
    leftovers,
    tally,
    wait_done,
    wait_until,
)


@pytest.fixture
def venv(tmp_path: Path, private_valkey: Valkey) -> Iterator[Env]:
    if private_valkey.proc is None:
        private_valkey.start()
    private_valkey.client().flushall()
    yield Env.make(tmp_path / "rt", private_valkey.url)
    if private_valkey.proc is None:
        private_valkey.start()


def _finished(conn: redis.Redis, queue: str) -> int:
    try:
        return int(conn.zcard(f"rq:finished:{queue}"))  # type: ignore[arg-type]
    except redis.RedisError:
        return -1


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "sigkill"])
def test_valkey_restart_mid_run(venv: Env, private_valkey: Valkey, start: Callable[..., WorkerProc],
                                kill: bool) -> None:
    ids = canaries(venv, 300, "database", sleep=0.02)
    conn = venv.conn()
    worker = start("database", "--concurrency", "4", on=venv)
    deadline = time.monotonic() + 30
    while _finished(conn, "database") < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 0 < _finished(conn, "database") < 300
    private_valkey.stop(kill=kill)  # appendfsync always: even SIGKILL loses no acknowledged write
    time.sleep(5)
    assert worker.proc.poll() is None, worker.log()[-3000:]  # waiting, not exiting
    private_valkey.start()
    conn = venv.conn()
    t = wait_done(conn, ids, 60)
    assert (t.finished, t.failed, t.duplicated, t.pending) == (300, 0, 0, 0), (
        t, dump(conn, t.missing), worker.log()[-3000:])
    assert worker.proc.poll() is None
    # Nothing stuck: wip drains (at the latest after abandoned_after plus a maintenance pass).
    deadline = time.monotonic() + 15
    while leftovers(conn) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(conn) == {}
    worker.signal(15)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_client_kill_and_server_stall(venv: Env, private_valkey: Valkey, start: Callable[..., WorkerProc]) -> None:
    ids = conversations(venv, 400)
    conn = venv.conn()
    worker = start("database", "--concurrency", "4", on=venv)
    stop = threading.Event()

    def chaos() -> None:
        admin = private_valkey.client()
        n = 0
        while not stop.is_set():
            try:
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                n += 1
                if n == 5:
                    admin.execute_command("DEBUG", "SLEEP", "5")
            except redis.RedisError:
                pass
            stop.wait(0.3)

    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        time.sleep(5)
    finally:
        stop.set()
        thread.join()
    conn = venv.conn()
    t = wait_done(conn, ids, 60)
    assert (t.finished, t.failed, t.duplicated, t.pending) == (400, 0, 0, 0), (
        t, dump(conn, t.missing), worker.log()[-3000:])
    assert conversation_rows(venv.db_url) == 400
    deadline = time.monotonic() + 15
    while leftovers(conn) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(conn) == {}
    assert worker.proc.poll() is None
    worker.signal(15)
    assert worker.wait(30) == 0
    assert tally(conn, ids).duplicated == 0


@pytest.mark.parametrize("forget_execution", [False, True], ids=["registered", "executions-expired"])
def test_claim_with_lost_reply_is_put_back(env: Env, start: Callable[..., WorkerProc],
                                           forget_execution: bool) -> None:
    """A claim that ran on the server but whose reply never reached the worker (the connection
    broke after the script ran; redis-py then retried it) leaves a job started under a live
    worker's name that the worker does not know about. The worker finds and requeues it."""
    from slimyq.runtime.scripts import Scripts

    conn = env.conn()
    worker = start("database", "--concurrency", "2")
    names = wait_until(lambda: conn.smembers("rq:workers:database"), 30, what="the worker to register")
    name = next(iter(names)).decode().removeprefix("rq:worker:")
    conn.set("slimyq:paused:database", 1)  # keep the worker from taking the job itself
    time.sleep(1.5)
    (job_id,) = canaries(env, 1, "database")
    now = time.time()
    pipe = conn.pipeline(transaction=True)  # resume and claim in one step: the worker cannot take it
    pipe.delete("slimyq:paused:database")
    Scripts(conn).claim(args=["database", name, 1, f"{now:.6f}", "2026-01-01T00:00:00.000000Z",
                              int(now + 3), 0, 10, 1, "lostreply"], client=pipe)
    pipe.execute()
    assert conn.zcard("rq:wip:database") == 1 and conn.llen("rq:queue:database") == 0
    if forget_execution:
        conn.delete(f"rq:worker:{name}:executions")
    t = wait_done(conn, [job_id], 30)
    assert t.finished == 1, (dump(conn, [job_id]), worker.log()[-3000:])
    assert [x["outcome"] for x in attempts(conn, job_id)] == ["finished"]
    worker.signal(15)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}
