"""Fault scenarios 15-19 of ``scripts/faults.py``: odd job data, a stall before a host death, a
thread that ignores its timeout, timeouts at the SQLite writer lock, lost replies and metrics.

Each takes the scenario's ``Run``, a job count and ``faults._row`` (passed in, so that this module
does not import the script that runs it) and returns a ``Row``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from harness import at, attempts, canaries, conversations, tally, wait_done, wait_until

from slimyq.runtime import codec

RowFn = Callable[..., Any]
CANARY = codec.encode_data("slimyq.jobs.canary.canary", {})
BAD_FIELDS: dict[str, tuple[str, bytes]] = {
    "retries-huge": ("retries_left", b"1e999"),
    "retries-inf": ("retries_left", b"inf"),
    "result-ttl-inf": ("result_ttl", b"inf"),
    "failure-ttl-huge": ("failure_ttl", b"1e999"),
    "intervals-x": ("retry_intervals", b'["x"]'),
    "attempts-int": ("slimyq_attempts", b"[1]"),
    "enqueued-bytes": ("enqueued_at", b"\xff\xfe"),
    "args-int": ("data", zlib.compress(b'["slimyq.jobs.canary.canary", null, 5, {}]')),
    "bomb": ("data", zlib.compress(b"[" + b" " * 50_000_000 + b"]")),
}
BAD_ID = b"bad-\xff\xfe-id"


def _raw_job(conn: Any, job_id: bytes, **fields: bytes) -> None:
    conn.hset(b"rq:job:" + job_id, mapping={"status": "queued", "origin": "database", "data": CANARY,
                                            "meta": '{"type":"canary"}', **fields})
    conn.rpush("rq:queue:database", job_id)


def s15_bad_fields(run: Any, n: int, row: RowFn) -> Any:
    """Jobs with unreadable fields (inf, 1e999, non-UTF-8, wrong JSON shapes, a 50 MB zlib bomb)
    and an id that is not UTF-8, among good jobs: each fails alone as refused, the worker process
    never restarts, every good job runs once."""
    good = conversations(run.env, n // 2)
    for job_id, (name, value) in BAD_FIELDS.items():
        _raw_job(run.conn, job_id.encode(), **{name: value})
    _raw_job(run.conn, BAD_ID)
    good += conversations(run.env, n // 2)
    w = run.worker("database")
    (child,) = w.wait_children(1)
    ids = good + list(BAD_FIELDS)
    wait_done(run.conn, ids, 300)
    refused = sum(1 for j in BAD_FIELDS if [a["outcome"] for a in attempts(run.conn, j)] == ["refused"])
    bad_id = run.conn.hget(b"rq:job:" + BAD_ID, "status") == b"failed"
    same = [c.pid for c in w.children()] == [child.pid]
    ok = refused == len(BAD_FIELDS) and bad_id and same
    note = (f"{refused}/{len(BAD_FIELDS)} refused naming the field; undecodable id "
            f"{'failed' if bad_id else 'NOT failed'}; worker process {'unchanged' if same else 'RESTARTED'}")
    return row("15 unreadable job fields and ids", run, ids, n, "-", expect_failed=len(BAD_FIELDS), note=note,
               extra_ok=ok)


def _claim_name(run: Any, worker: Any) -> str:
    (child,) = worker.wait_children(1)

    def registered() -> str | None:
        for m in run.conn.smembers("slimyq:claims:database"):
            name = m.decode()
            pid = run.conn.hget(f"rq:worker:{name}", "pid")
            if f".{worker.pid}.database." in name and pid == str(child.pid).encode():
                return name
        return None

    return str(wait_until(registered, 30))


def s16_stall_then_host_death(run: Any, n: int, row: RowFn) -> Any:
    """A worker frozen past abandoned_after (its key lapses, maintenance drops it from the claim
    set) resumes, then its host dies with a job in its claim list; time to recover: from the
    death until that job has finished on the other worker."""
    a, b = run.worker("database"), run.worker("database")
    name = _claim_name(run, a)
    _claim_name(run, b)
    os.killpg(a.pid, signal.SIGSTOP)
    wait_until(lambda: not run.conn.sismember("slimyq:claims:database", name), 60)
    os.killpg(a.pid, signal.SIGCONT)
    healed = wait_until(lambda: run.conn.sismember("slimyq:claims:database", name)
                        and run.conn.hexists(f"rq:worker:{name}", "birth"), 30)
    os.killpg(a.pid, signal.SIGSTOP)
    os.killpg(b.pid, signal.SIGSTOP)
    time.sleep(1.5)  # past b's BLMOVE timeout: b cannot take the job first
    (job,) = canaries(run.env, 1, "database")
    run.conn.lmove("rq:queue:database", f"slimyq:claim:{name}", "LEFT", "RIGHT")
    a.killpg()
    died = time.monotonic()
    os.killpg(b.pid, signal.SIGCONT)
    wait_done(run.conn, [job], 60)
    recovered = time.monotonic() - died
    more = conversations(run.env, n)
    wait_done(run.conn, more, 300)
    return row("16 stall, resume, then host death", run, [job, *more], n, f"{recovered:.1f} s",
               note="re-registered after the stall (key, fields, claim set)" if healed else "NOT re-registered",
               extra_ok=bool(healed))


def s17_stuck_thread(run: Any, n: int, row: RowFn, database: str) -> Any:
    """A psycopg query blocked on a table lock ignores the job timeout: the job keeps its slot,
    the worker process restarts, and the retry starts only once that process is gone."""
    if database != "postgres":
        return row("17 thread ignores its timeout", run, [], None, "-", note="n/a on SQLite (--database postgres)")
    import psycopg

    run.env.reconfigure(queues={"database": {"timeout": 1, "attempts": 3, "concurrency": 4}})
    blocker = psycopg.connect(run.env.database_url)
    blocker.execute("LOCK TABLE chat_conversations IN ACCESS EXCLUSIVE MODE")
    (job,) = conversations(run.env, 1)
    w = run.worker("database")
    (first,) = w.wait_children(1)
    wait_until(lambda: run.conn.hget(f"rq:job:{job}", "status") == b"started", 60)
    others = canaries(run.env, n, "database")
    wait_until(lambda: not first.is_running() or first.status() == "zombie", 120)
    blocker.commit()
    blocker.close()
    wait_done(run.conn, [job, *others], 300)
    a = attempts(run.conn, job)
    # The stuck attempt's record is written by the supervisor once the process is gone.
    ok = len(a) > 1 and all(at(x["endedAt"]) <= at(y["startedAt"]) for x, y in itertools.pairwise(a))
    note = f"attempts: {', '.join(x['outcome'] for x in a)}; no two attempts overlapped: {ok}"
    return row("17 thread ignores its timeout", run, [job, *others], 1, "-", note=note, extra_ok=ok)


def s18_sqlite_lock_timeouts(run: Any, n: int, row: RowFn, database: str) -> Any:
    """Timeouts landing while job threads wait for the SQLite writer lock (another process holds
    the database for 3 s): afterwards no transaction waits for a leaked lock."""
    if database != "sqlite":
        return row("18 timeouts at the SQLite writer lock", run, [], None, "-", note="n/a (SQLite only)")
    run.env.reconfigure(queues={"database": {"timeout": 1, "attempts": 5, "backoff_base": 0.2, "concurrency": 4}})
    (warm,) = conversations(run.env, 1)
    run.worker("database")
    wait_done(run.conn, [warm], 60)
    holder = sqlite3.connect(run.env.db_url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    contended = conversations(run.env, 16)
    time.sleep(3)
    holder.execute("ROLLBACK")
    holder.close()
    after = conversations(run.env, n)
    started = time.monotonic()
    wait_done(run.conn, [*contended, *after], 300)
    slowest = max((a["durationMs"] for j in after for a in attempts(run.conn, j)), default=0.0)
    secs = time.monotonic() - started
    return row("18 timeouts at the SQLite writer lock", run, [warm, *contended, *after], n + 17, "-",
               note=f"{n} jobs after the lock was freed in {secs:.1f} s, slowest attempt {slowest:.0f} ms",
               extra_ok=slowest < 10_000)


def s19_lost_replies(run: Any, n: int, row: RowFn, valkey: Any) -> Any:
    """Connections cut every 0.2 s while jobs complete: redis-py repeats the COMPLETE whose reply
    was lost; metrics must count each job once."""
    ids = canaries(run.env, n, "database", sleep=0.2)  # ~n/50 s of completions at concurrency 10
    run.worker("database")
    stop = threading.Event()
    admin = valkey.client()

    def chaos() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a kill that finds nobody is fine
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            stop.wait(0.2)

    th = threading.Thread(target=chaos)
    th.start()
    time.sleep(max(n / 50, 3))  # our own connection is cut too: look only once the chaos is over
    stop.set()
    th.join()
    run.conn = run.env.conn()
    wait_done(run.conn, ids, 300)
    t = tally(run.conn, ids)

    def counted() -> int:
        raw = run.conn.hget("slimyq:counts:database", "*:completed")
        return int(raw or 0)

    wait_until(lambda: counted() >= t.finished, 30)
    time.sleep(1)
    c = counted()
    return row("19 lost replies (CLIENT KILL every 0.2 s)", run, ids, None, "-",
               note=f"metrics counted {c} completions for {t.finished} finished jobs", extra_ok=c == t.finished)
