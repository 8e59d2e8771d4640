#!/usr/bin/env python
"""Fault injection: real ``slimyq worker`` processes against a private Valkey (AOF, fsync always),
with processes killed, the server restarted, connections cut and hostile jobs; ends with a
Markdown table (scenario, enqueued, finished, failed, lost, effect duplicated, time to recover).

    python scripts/faults.py                       # every scenario, SQLite, 2,000 baseline jobs
    python scripts/faults.py --scenarios 1,4,8 --jobs 500 --database postgres

"lost" counts jobs with no terminal result (finished or failed) once the scenario is over;
"effect duplicated" counts jobs with more than one terminal result plus database rows beyond one
per create-conversation job. The same scenarios run at smaller counts in ``tests/runtime``.
Helpers are shared with the tests (``tests/runtime/harness.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "runtime"))

import itertools

from faults_hardening import (
    s15_bad_fields,
    s16_stall_then_host_death,
    s17_stuck_thread,
    s18_sqlite_lock_timeouts,
    s19_lost_replies,
)
from harness import (
    Env,
    Valkey,
    WorkerProc,
    at,
    attempts,
    canaries,
    conversation_rows,
    conversations,
    descendants_alive,
    dump,
    leftovers,
    tally,
    wait_done,
    wait_until,
)

PG_ADMIN_URL = os.environ.get("SLIMYQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Row:
    scenario: str
    enqueued: int
    finished: int
    failed: int
    lost: int
    duplicated: int
    recover: str
    ok: bool
    note: str = ""


class Run:
    """One scenario's world: a fresh Valkey database, database and config; workers cleaned up."""

    def __init__(self, root: Path, valkey: Valkey, database: str, name: str, **config: object) -> None:
        valkey.client().flushall()
        self.root = root / name
        shutil.rmtree(self.root, ignore_errors=True)
        db_url = _pg_database() if database == "postgres" else None
        self.env = Env.make(self.root, valkey.url, db_url, **config)  # type: ignore[arg-type]
        self.conn = self.env.conn()
        self.workers: list[WorkerProc] = []

    def worker(self, *args: str) -> WorkerProc:
        w = self.env.worker(*args)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        if self.env.database_url:
            _drop_pg(self.env.database_url)


_pg_created: list[str] = []


def _pg_database() -> str:
    import psycopg

    name = f"slimyq_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    _pg_created.append(name)
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def _drop_pg(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _row(name: str, run: Run, ids: list[str], rows_expected: int | None, recover: str, *,
         expect_failed: int = 0, note: str = "", extra_ok: bool = True) -> Row:
    t = tally(run.conn, ids)
    dup = t.duplicated
    if rows_expected is not None:
        dup += max(conversation_rows(run.env.db_url) - rows_expected, 0)
        if conversation_rows(run.env.db_url) < rows_expected and not t.pending:
            note = (note + "; " if note else "") + "missing rows"
            extra_ok = False
    ok = extra_ok and t.pending == 0 and dup == 0 and t.failed == expect_failed
    if t.pending:
        job = t.missing[0]
        state = {k.decode(): v.decode(errors="replace")[:60] for k, v in run.conn.hgetall(f"rq:job:{job}").items()
                 if k in (b"status", b"worker_name", b"started_at", b"ended_at")}
        note = (note + "; " if note else "") + f"lost e.g. {job}: {state}; left: {leftovers(run.conn)}"
        print(dump(run.conn, t.missing), file=sys.stderr)
    return Row(name, len(ids), t.finished, t.failed, t.pending, dup, recover, ok, note)


# ----------------------------------------------------------------- scenarios


def s1_baseline(run: Run, n: int) -> Row:
    ids = conversations(run.env, n)
    started = time.monotonic()
    w = run.worker("database", "--burst", "--concurrency", "10")
    w.wait(600)
    secs = time.monotonic() - started
    return _row("1 baseline", run, ids, n, "-", note=f"{n / secs:.0f} jobs/s incl. start-up")


def s2_always_failing(run: Run, n: int) -> Row:
    run.env.reconfigure(queues={"database": {"backoff_base": 2.0}})  # the real default: 2 s, then 4 s
    ids = canaries(run.env, 1, "database", fail=99)
    w = run.worker("database", "--burst")
    w.wait(120)
    a = attempts(run.conn, ids[0])
    gaps = []
    for prev, cur in itertools.pairwise(a):
        gaps.append((at(cur["startedAt"]) - at(prev["endedAt"])).total_seconds())
    ok = [x["outcome"] for x in a] == ["retried", "retried", "failed"]
    note = f"attempts {len(a)}, gaps {', '.join(f'{g:.1f} s' for g in gaps)}"
    return _row("2 always failing", run, ids, None, "-", expect_failed=1, note=note, extra_ok=ok)


def s3_fails_twice(run: Run, n: int) -> Row:
    ids = canaries(run.env, 1, "database", fail=2)
    rows = conversations(run.env, 1)
    w = run.worker("database", "--burst")
    w.wait(120)
    a = [x["outcome"] for x in attempts(run.conn, ids[0])]
    return _row("3 fails twice, then ok", run, ids + rows, 1, "-", note=f"attempts: {','.join(a)}",
                extra_ok=a == ["retried", "retried", "finished"])


def s4_worker_sigkill(run: Run, n: int) -> Row:
    """Kill the worker process twice while create-conversation jobs (some mid-commit) and slow
    canaries run; time to recover: from a kill until every job it had in flight has finished."""
    run.env.reconfigure(queues={"database": {"concurrency": 10}})
    ids = conversations(run.env, n) + canaries(run.env, 60, "database", sleep=1)
    w = run.worker("database")
    recover = []
    for _ in range(2):
        (child,) = w.wait_children(1)
        wait_until(lambda: run.conn.zcard("rq:wip:database") > 0, 60, 0.01)
        time.sleep(0.2)
        inflight = [m.decode().rpartition(":")[0] for m in run.conn.zrange("rq:wip:database", 0, -1)]
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_done(run.conn, inflight, 60)
        recover.append(time.monotonic() - killed)
        wait_until(lambda c=child: [p for p in w.children() if p.pid != c.pid], 30)
    wait_done(run.conn, ids, 120)
    rerun = sum(1 for job_id in ids if len(attempts(run.conn, job_id)) > 1)
    return _row("4 worker SIGKILLed mid-job (x2)", run, ids, n, f"{max(recover):.1f} s",
                note=f"{rerun} jobs ran again after a kill")


def s5_supervisor_sigkill(run: Run, n: int) -> Row:
    ids = canaries(run.env, max(n // 20, 30), "database", sleep=1) + conversations(run.env, n // 4)
    w = run.worker("database", "--concurrency", "10", "--fork")
    wait_until(lambda: run.conn.zcard("rq:wip:database") >= 5, 60, 0.02)
    tree = [p.pid for p in w.group()]
    w.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not descendants_alive(tree), 30, 0.05)
    gone = time.monotonic() - killed
    left = leftovers(run.conn)
    stranded = {k: v for k, v in left.items() if not k.startswith("rq:queue:")}
    again = run.worker("database", "--burst", "--concurrency", "10")
    code = again.wait(300)
    return _row("5 supervisor SIGKILLed", run, ids, n // 4, f"{gone:.1f} s (orphans exit)",
                note=f"no orphan left; left started: {stranded or 'nothing'}; restart exit {code}",
                extra_ok=not stranded and code == 0)


def s6_sigterm(run: Run, n: int) -> Row:
    ids = canaries(run.env, 40, "database", sleep=1)
    w = run.worker("database", "--concurrency", "5")
    wait_until(lambda: run.conn.zcard("rq:wip:database") == 5, 60, 0.02)
    time.sleep(0.3)
    w.signal(signal.SIGTERM)
    t0 = time.monotonic()
    code1 = w.wait(60)
    first = time.monotonic() - t0
    after_first = tally(run.conn, ids)
    clean1 = leftovers(run.conn) == {"rq:queue:database": 40 - after_first.finished}
    w2 = run.worker("database", "--concurrency", "5")
    wait_until(lambda: run.conn.zcard("rq:wip:database") == 5, 60, 0.02)
    w2.signal(signal.SIGTERM)
    time.sleep(0.2)
    w2.signal(signal.SIGTERM)
    code2 = w2.wait(60)
    clean2 = not [k for k in leftovers(run.conn) if not k.startswith("rq:queue:")]
    w3 = run.worker("database", "--burst", "--concurrency", "10")
    w3.wait(120)
    ok = code1 == 0 and code2 == 0 and clean1 and clean2
    return _row("6 SIGTERM, then SIGTERM x2", run, ids, None, f"{first:.1f} s (drain)",
                note=f"exit {code1}/{code2}; nothing left started", extra_ok=ok)


def s7_timeout(run: Run, n: int) -> Row:
    run.env.reconfigure(queues={"chat": {"timeout": 1, "attempts": 2, "backoff_base": 0.5}})
    slow = canaries(run.env, 2, "chat", sleep=30)
    quick = canaries(run.env, 50, "chat", sleep=0.05)
    w = run.worker("chat", "--burst")
    w.wait(120)
    a = attempts(run.conn, slow[0])
    ok = [x["errorType"] for x in a] == ["timeout", "timeout"] and tally(run.conn, quick).finished == 50
    return _row("7 job past its timeout", run, slow + quick, None, "-", expect_failed=2,
                note=f"{len(a)} attempts of ~{a[0]['durationMs'] / 1000:.1f} s each; others served", extra_ok=ok)


def s8_valkey_restart(run: Run, n: int, valkey: Valkey) -> Row:
    ids = conversations(run.env, n // 2) + canaries(run.env, n // 2, "chat", sleep=0.05)
    ws = [run.worker("database", "chat")]
    wait_until(lambda: run.conn.zcard("rq:finished:database") >= 50, 60, 0.02)
    valkey.stop(kill=True)
    time.sleep(12)
    alive = all(w.proc.poll() is None for w in ws)
    valkey.start()
    restarted = time.monotonic()
    run.conn = run.env.conn()
    before = run.conn.zcard("rq:finished:database") + run.conn.zcard("rq:finished:chat")
    wait_until(lambda: run.conn.zcard("rq:finished:database") + run.conn.zcard("rq:finished:chat") > before,
               60, 0.05)
    resumed = time.monotonic() - restarted
    wait_done(run.conn, ids, 120)
    wait_until(lambda: not leftovers(run.conn), 30, 0.2)
    return _row("8 Valkey SIGKILLed 12 s (AOF)", run, ids, n // 2, f"{resumed:.1f} s after restart",
                note="workers stayed up" if alive else "a worker exited", extra_ok=alive)


def s9_client_kill_and_stall(run: Run, n: int, valkey: Valkey) -> Row:
    ids = conversations(run.env, n // 2)
    run.worker("database")
    stop = threading.Event()
    admin = valkey.client()

    def chaos() -> None:
        k = 0
        while not stop.is_set():
            try:
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
                k += 1
                if k == 5:
                    admin.execute_command("DEBUG", "SLEEP", "5")  # type: ignore[no-untyped-call]
            except Exception:
                pass
            stop.wait(0.25)

    th = threading.Thread(target=chaos)
    th.start()
    time.sleep(8)
    stop.set()
    th.join()
    t0 = time.monotonic()
    wait_done(run.conn, ids, 120)
    wait_until(lambda: not leftovers(run.conn), 30, 0.2)
    return _row("9 CLIENT KILL + DEBUG SLEEP 5", run, ids, n // 2, f"{time.monotonic() - t0:.1f} s")


def s10_database_down(run: Run, n: int, database: str) -> Row:
    if database != "postgres":
        return Row("10 database down 10 s", 0, 0, 0, 0, 0, "-", True, "n/a on SQLite (--database postgres)")
    import psycopg

    ids = conversations(run.env, n // 2)
    run.worker("database")
    name = run.env.database_url.rsplit("/", 1)[1]
    wait_until(lambda: run.conn.zcard("rq:finished:database") >= 20, 60, 0.02)
    end = time.monotonic() + 10
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false")
        while time.monotonic() < end:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            time.sleep(0.2)
        admin.execute(f"ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true")
    t0 = time.monotonic()
    wait_done(run.conn, ids, 120)
    t = tally(run.conn, ids)
    return _row("10 PostgreSQL down 10 s", run, ids, n // 2, f"{time.monotonic() - t0:.1f} s",
                expect_failed=t.failed, note=f"{t.failed} failed after all attempts" if t.failed else "")


def s11_hostile(run: Run, n: int) -> Row:
    from rq import Queue
    from rq.serializers import JSONSerializer

    marker = run.root / "marker"
    jq = Queue("database", connection=run.conn, serializer=JSONSerializer)
    bad = [
        jq.enqueue("os.system", f"touch {marker}").id,
        jq.enqueue("subprocess.call", f"touch {marker}", shell=True).id,
        Queue("database", connection=run.conn).enqueue("os.system", f"touch {marker}").id,
        jq.enqueue("slimyq.jobs.database.create_conversation", userId="u", title="x" * 100_000).id,
    ]
    run.conn.hset("rq:job:malformed", mapping={"status": "queued", "data": b"\x00garbage"})
    run.conn.hset("rq:job:malformed2", mapping={"status": "queued", "data": zlib.compress(b"[1,2")})
    run.conn.rpush("rq:queue:database", "malformed", "malformed2")
    bad += ["malformed", "malformed2"]
    good = canaries(run.env, 5, "database")
    bulk = run.root / "bad.jsonl"
    bulk.write_bytes(b'{"type": "canary", "payload": {"sleepSeconds": 0, "x": "\xff\xfe"}, "queue": "database"}\n')
    before = run.conn.llen("rq:queue:database")
    res = run.env.cli("enqueue", "--file", str(bulk))
    bulk_ok = res.returncode == 2 and run.conn.llen("rq:queue:database") == before
    w = run.worker("database")
    wait_done(run.conn, bad + good, 60)
    alive = w.proc.poll() is None
    ok = alive and not marker.exists() and bulk_ok and tally(run.conn, good).finished == 5
    note = (f"marker {'CREATED' if marker.exists() else 'absent'}; bulk invalid UTF-8 exit {res.returncode}; "
            f"worker {'alive' if alive else 'DIED'}")
    return _row("11 hostile/malformed input", run, bad + good, None, "-", expect_failed=len(bad), note=note,
                extra_ok=ok)


def s12_retention(run: Run, n: int) -> Row:
    run.env.reconfigure(queues={"database": {"keep_finished": 50, "keep_failed": 100},
                                "chat": {"keep_finished": 50, "keep_failed": 100, "attempts": 1}})
    mem0 = int(run.conn.info("memory")["used_memory"])
    total = max(n * 5, 10_000)
    ids = canaries(run.env, total - 500, "database") + canaries(run.env, 500, "chat", fail=1)
    peak = 0
    w = run.worker("database", "chat", "--burst")
    while w.proc.poll() is None:
        peak = max(peak, int(run.conn.zcard("rq:finished:database")), int(run.conn.zcard("rq:failed:chat")))
        time.sleep(0.05)
    t = tally(run.conn, ids)  # before the 30 s trim grace ends
    fin, fail = run.conn.zcard("rq:finished:database"), run.conn.zcard("rq:failed:chat")
    time.sleep(31)
    mem1 = int(run.conn.info("memory")["used_memory"])
    keys = run.conn.dbsize()
    ok = fin == 50 and fail == 100 and peak <= 100
    note = (f"finished reg {fin}, failed reg {fail} (peak {peak}); Redis {mem0 / 2**20:.1f} -> "
            f"{mem1 / 2**20:.1f} MiB, {keys} keys after trim grace")
    return Row("12 retention, 10,000 jobs", len(ids), t.finished, t.failed, t.pending, t.duplicated, "-",
               ok and t.pending == 0 and t.duplicated == 0 and t.failed == 500, note)


def s13_secrets(run: Run, n: int, root: Path) -> Row:
    password = f"pw-{uuid.uuid4().hex}"
    api_key = f"sk-test-{uuid.uuid4().hex}"
    vk = Valkey(root / "valkey-secret", password=password)
    vk.start()
    try:
        env = Env.make(run.root / "secret", vk.url)
        env_vars = {"OPENAI_API_KEY": api_key, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
        ids = canaries(env, 20, "database")
        from harness import enqueue

        ids += enqueue(env, "chat_bot_interaction", [{"prompt": f"hello {i}", "userId": "u1"} for i in range(5)])
        proc = subprocess.run([sys.executable, "-m", "slimyq", "--config", str(env.config), "worker", "--burst"],
                              env={**env.environ, **env_vars}, capture_output=True, text=True, timeout=300)
        show = subprocess.run([sys.executable, "-m", "slimyq", "--config", str(env.config), "config", "show"],
                              env={**env.environ, **env_vars}, capture_output=True, text=True, timeout=60)
        conn = env.conn()
        conn.bgrewriteaof()
        time.sleep(1)
        data = b"".join(p.read_bytes() for p in (root / "valkey-secret").rglob("*") if p.is_file())
        out = proc.stdout + proc.stderr + show.stdout + show.stderr
        leaks = [name for name, secret in (("password", password), ("api key", api_key))
                 if secret in out or secret.encode() in data]
        t = tally(conn, ids)
        return Row("13 secrets in output/data", len(ids), t.finished, t.failed, t.pending, t.duplicated, "-",
                   not leaks and t.pending == 0, "leaked: " + ", ".join(leaks) if leaks else "no leak found "
                   "(worker log, config show, AOF, job hashes, results)")
    finally:
        vk.stop(kill=True)


def s14_enqueue_redis_down(run: Run, n: int, valkey: Valkey) -> Row:
    keys_before = run.conn.dbsize()
    valkey.stop()
    try:
        res = run.env.cli("enqueue", "canary", "--queue", "database", timeout=60)
    finally:
        valkey.start()
    run.conn = run.env.conn()
    msg = (res.stderr.strip().splitlines() or [""])[-1]
    ok = res.returncode == 1 and run.conn.dbsize() == keys_before and "Traceback" not in res.stderr
    return Row("14 enqueue while Redis down", 1, 0, 0, 0, 0, "-", ok, f"exit {res.returncode}: {msg[:90]}")


# ----------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="1-19", help="e.g. 1,4,8 or 1-19 (default: all)")
    parser.add_argument("--jobs", type=int, default=2000, help="baseline job count (others scale from it)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = parser.parse_args()
    wanted: set[int] = set()
    for part in args.scenarios.split(","):
        lo, _, hi = part.partition("-")
        wanted.update(range(int(lo), int(hi or lo) + 1))
    root = Path(tempfile.mkdtemp(prefix="slimyq-faults-"))
    valkey = Valkey(root / "valkey")
    valkey.start()
    n = args.jobs
    table: dict[int, Callable[[Run], Row]] = {
        1: lambda r: s1_baseline(r, n),
        2: lambda r: s2_always_failing(r, n),
        3: lambda r: s3_fails_twice(r, n),
        4: lambda r: s4_worker_sigkill(r, n // 4),
        5: lambda r: s5_supervisor_sigkill(r, n // 2),
        6: lambda r: s6_sigterm(r, n),
        7: lambda r: s7_timeout(r, n),
        8: lambda r: s8_valkey_restart(r, n // 2, valkey),
        9: lambda r: s9_client_kill_and_stall(r, n // 2, valkey),
        10: lambda r: s10_database_down(r, n // 2, args.database),
        11: lambda r: s11_hostile(r, n),
        12: lambda r: s12_retention(r, n),
        13: lambda r: s13_secrets(r, n, root),
        14: lambda r: s14_enqueue_redis_down(r, n, valkey),
        15: lambda r: s15_bad_fields(r, n // 4, _row),
        16: lambda r: s16_stall_then_host_death(r, n // 10, _row),
        17: lambda r: s17_stuck_thread(r, n // 20, _row, args.database),
        18: lambda r: s18_sqlite_lock_timeouts(r, n // 20, _row, args.database),
        19: lambda r: s19_lost_replies(r, n // 2, _row, valkey),
    }
    rows: list[Row] = []
    try:
        for number in sorted(wanted & table.keys()):
            run = Run(root, valkey, args.database, f"s{number}")
            started = time.monotonic()
            try:
                row = table[number](run)
            except Exception as exc:  # a scenario that blows up is a failed row, not a crash
                row = Row(f"{number} (error)", 0, 0, 0, 0, 0, "-", False, f"{type(exc).__name__}: {exc}"[:200])
            finally:
                run.close()
            print(f"# scenario {number}: {'ok' if row.ok else 'FAIL'} in {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        valkey.stop(kill=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"# logs kept in {root}", file=sys.stderr)
    print(f"\nslimyq fault injection: {args.database}, private Valkey with AOF (appendfsync always), "
          f"{os.cpu_count()} CPUs\n")
    print("| scenario | enqueued | finished | failed | lost | effect duplicated | time to recover | result | notes |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        print(f"| {r.scenario} | {r.enqueued} | {r.finished} | {r.failed} | {r.lost} | {r.duplicated} | "
              f"{r.recover} | {'ok' if r.ok else '**FAIL**'} | {r.note} |")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
