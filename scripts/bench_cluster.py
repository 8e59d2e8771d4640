#!/usr/bin/env python
"""Scaling across hosts: 1, 2, 4 and 8 worker hosts (network namespaces, ``scripts/cluster.py``)
on one private Valkey and one PostgreSQL, with and without 2 ms added between each host and Redis;
then the cost of acknowledging enqueues with Redis WAIT (``redis_wait_replicas``). Needs root.

    python scripts/bench_cluster.py                  # everything (a few minutes)
    python scripts/bench_cluster.py --hosts 1,2 --jobs database --latency 0

Jobs: ``database`` = create-conversation on PostgreSQL behind a proxy adding 2 ms per round trip
(a job of 30-34 ms at one host on the 2-core machine of the README's figures, more as the cores
fill up: see the "job ms" column); ``chat`` = chat-bot-interaction against a local
OpenAI-compatible stub answering in 50 ms. Default concurrency (database 10, chat 5) per host.
The queue is paused while the hosts start, so every host is up when the clock starts. Redis
commands come from INFO commandstats (minus this script's polling), CPU from /proc (Redis, the
workers of every namespace, the machine as a whole). "PostgreSQL connections" is the most seen in
pg_stat_activity for the bench's database, this script's own query included (one).

Each job kind gets a database of its own, ``slimyq_clusterbench_<hex>``, dropped at the end; one
left behind by a killed run is dropped by the next run (it holds the harness's lock, so no other
run is using it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from cluster import DB_IP, Cluster, Host, exclusive, unavailable  # noqa: E402
from harness import enqueue, wait_until  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
DB_PREFIX = "slimyq_clusterbench_"  # no other script names its databases so
DB_DELAY_MS = 2.0
CONCURRENCY = {"database": 10, "chat": 5}
BIG = {"keep_finished": 1_000_000, "keep_failed": 1_000_000}


@dataclass
class Row:
    jobs: str
    hosts: int
    latency_ms: float
    n: int
    seconds: float
    cmds_per_job: float
    redis_cpu_ms: float
    worker_cpu_ms: float
    proxy_cpu_ms: float
    machine_cpu: float
    job_ms: float
    pg_conns: int
    queued_bytes: float
    retained_bytes: float

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def _commands(conn: Any) -> int:
    return int(sum(v["calls"] for v in conn.info("commandstats").values()))


def drop_leftover_databases(admin_url: str = PG_ADMIN) -> list[str]:
    """Drop the databases earlier runs of this script left behind (killed before their ``finally``).
    Call it holding the harness's lock (``cluster.exclusive``): a live run's database is in use."""
    with psycopg.connect(admin_url, autocommit=True) as a:
        rows = a.execute("SELECT datname FROM pg_database WHERE datname ~ %s",
                         (f"^{DB_PREFIX}[0-9a-f]{{10}}$",)).fetchall()
        names = [str(r[0]) for r in rows]
        for name in names:
            a.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return names


def _pg_conns(url: str, dbname: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)).fetchone()
        return int(row[0]) if row else 0


def _median_job_ms(conn: Any, ids: list[str]) -> float:
    import json

    pipe = conn.pipeline(transaction=False)
    for i in ids[:: max(1, len(ids) // 200)]:
        pipe.hget(f"rq:job:{i}", "slimyq_attempts")
    durations = sorted(json.loads(raw)[-1]["durationMs"] for raw in pipe.execute() if raw)
    return durations[len(durations) // 2] if durations else 0.0


def _payloads(kind: str, n: int, run: str) -> tuple[str, list[dict[str, Any]]]:
    if kind == "database":
        return "create_conversation", [{"userId": f"{run}-{i % 50}", "title": f"t{i}"} for i in range(n)]
    return "chat_bot_interaction", [{"prompt": f"hello {i}", "userId": f"{run}-{i}"} for i in range(n)]


def measure(c: Cluster, kind: str, hosts: list[Host], n: int, latency: float, pg_url: str, dbname: str) -> Row:
    c.reset()
    conn = c.conn()
    conn.set(f"slimyq:paused:{kind}", "bench")  # slimyq's pause flag (ops.pause): workers claim nothing
    for h in hosts:
        h.worker(kind, "--concurrency", str(CONCURRENCY[kind]), "--log-level", "warning", redis_delay_ms=latency)
    wait_until(lambda: conn.scard(f"rq:workers:{kind}") >= len(hosts), 120, 0.2, "every host's worker")
    time.sleep(1.0)
    mem0 = int(conn.info("memory")["used_memory"])
    job_type, payloads = _payloads(kind, n, uuid.uuid4().hex[:6])
    ids = enqueue(c.env, job_type, payloads, conn=conn)
    queued_bytes = (int(conn.info("memory")["used_memory"]) - mem0) / n
    pids = [p for h in hosts for p in h.pids()]
    proxies = [c.db_proxy.proc.pid, *(h.redis_proxy.proc.pid for h in hosts if h.redis_proxy is not None)]
    cpu_p = _cpu(proxies)
    conn.config_resetstat()
    cpu_r, cpu_w = c.redis_cpu_seconds(), _cpu(pids)
    psutil.cpu_percent()
    polls, conns = 0, 0
    t0 = time.monotonic()
    conn.delete(f"slimyq:paused:{kind}")
    while True:
        pipe = conn.pipeline(transaction=False)
        pipe.llen(f"rq:queue:{kind}")
        pipe.zcard(f"rq:wip:{kind}")
        queued, started = pipe.execute()
        polls += 1
        if polls % 10 == 0:
            conns = max(conns, _pg_conns(pg_url, dbname))
        if queued == 0 and started == 0:
            break
        if time.monotonic() - t0 > 600:
            raise RuntimeError(f"{kind} on {len(hosts)} host(s) did not drain; {hosts[0].log()[-2000:]}")
        time.sleep(0.05)
    seconds = time.monotonic() - t0
    machine = psutil.cpu_percent()
    used = _commands(conn) - 2 * polls - 2  # our polls, the resume and INFO itself
    cpu_r, cpu_w = c.redis_cpu_seconds() - cpu_r, _cpu(pids) - cpu_w
    cpu_p = _cpu(proxies) - cpu_p
    retained = (int(conn.info("memory")["used_memory"]) - mem0) / n
    return Row(kind, len(hosts), latency, n, seconds, used / n, cpu_r * 1000 / n, cpu_w * 1000 / n,
               cpu_p * 1000 / n, machine,
               _median_job_ms(conn, ids), conns, queued_bytes, retained)


def wait_cost(root: Path) -> list[tuple[str, int, float, float]]:
    """Enqueue throughput with and without WAIT 1, on a primary with one replica (loopback)."""
    from cluster_ha import SentinelSet

    from slimyq.config import Settings
    from slimyq.jobs import registry
    from slimyq.payloads.common import validate_payload
    from slimyq.producer import EnqueueRequest, enqueue_many
    from slimyq.redis import connect

    ha = SentinelSet(root / "ha")
    runs: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    try:
        ha.start()
        jt = registry.get("canary")
        req = EnqueueRequest(jt, validate_payload(jt.payload, {}), "database")
        for _round in range(3):  # alternating, medians: the machine is noisy
            for replicas in (0, 1):
                settings = Settings(redis_url=ha.url, redis_wait_replicas=replicas)
                conn = connect(settings)
                t = time.perf_counter()
                for _ in range(500):
                    list(enqueue_many(conn, settings, [req]))
                one = 500 / (time.perf_counter() - t)
                t = time.perf_counter()
                list(enqueue_many(conn, settings, [req] * 10_000))
                runs[replicas].append((one, 10_000 / (time.perf_counter() - t)))
                conn.close()
    finally:
        ha.stop()
    out = []
    for replicas, values in runs.items():
        ones, bulks = sorted(v[0] for v in values), sorted(v[1] for v in values)
        out.append(("WAIT 1" if replicas else "no WAIT", replicas, ones[1], bulks[1]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--jobs", default="database,chat")
    parser.add_argument("--latency", default="0,2", help="ms added between each host and Redis")
    parser.add_argument("--per-host", type=int, default=0, help="jobs per host (default: 1000 database, 300 chat)")
    parser.add_argument("--no-wait", action="store_true", help="skip the WAIT measurement")
    ns = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    counts = [int(x) for x in ns.hosts.split(",")]
    root = Path(tempfile.mkdtemp(prefix="slimyq-cluster-bench-"))
    rows: list[Row] = []
    with exclusive():  # one harness run at a time; the Clusters below take the same lock again
        drop_leftover_databases()
        for kind in ns.jobs.split(","):
            rows += _run_kind(ns, kind, counts, root, rows)
    print()
    print(HEADER)
    for row in rows:
        print(_line(row, rows))
    if not ns.no_wait:
        print()
        print("| enqueue acknowledgement (median of 3) | one job per call, jobs/s | 10,000 in one call, jobs/s |")
        print("|---|---:|---:|")
        for what, _r, one, bulk in wait_cost(root):
            print(f"| {what} | {one:,.0f} | {bulk:,.0f} |")
    return 0


def _run_kind(ns: argparse.Namespace, kind: str, counts: list[int], root: Path, done: list[Row]) -> list[Row]:
    """Every host count and latency for one job kind, on a database and a Cluster of its own."""
    rows: list[Row] = []
    dbname = f"{DB_PREFIX}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as a:
        a.execute(f'CREATE DATABASE "{dbname}"')
    pg_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}"
    stub = None
    try:
        c = Cluster(root / kind, pg_url, db_delay_ms=DB_DELAY_MS if kind == "database" else 0.0,
                    queues={"database": BIG, "chat": BIG})
        try:
            if kind == "chat":
                stub = _stub(c)
            hosts = c.add_hosts(max(counts))
            for latency in (float(x) for x in ns.latency.split(",")):
                for k in counts:
                    per = ns.per_host or (1000 if kind == "database" else 300)
                    row = measure(c, kind, hosts[:k], min(per * k, 4000), latency, pg_url, dbname)
                    rows.append(row)
                    print(_line(row, [*done, *rows]), flush=True)
        finally:
            if stub is not None:
                stub.kill()
                stub.wait(10)
            c.close()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as a:
            a.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return rows


HEADER = ("| jobs | hosts | added Redis latency ms | jobs run | seconds | jobs/s | vs 1 host | vs loopback | "
          "Redis cmds/job | Redis CPU ms/job | worker CPU ms/job | proxy CPU ms/job | machine CPU % | "
          "job ms (median) | PostgreSQL connections | Redis bytes/queued job | Redis bytes/retained job |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def _line(row: Row, rows: list[Row]) -> str:
    one = next((r for r in rows if r.jobs == row.jobs and r.hosts == 1 and r.latency_ms == row.latency_ms), row)
    loop = next((r for r in rows if r.jobs == row.jobs and r.hosts == row.hosts and r.latency_ms == 0), row)
    return (f"| {row.jobs} | {row.hosts} | {row.latency_ms:g} | {row.n} | {row.seconds:.2f} | {row.rate:,.0f} | "
            f"{row.rate / one.rate:.2f}x | {row.rate / loop.rate:.2f} | {row.cmds_per_job:.1f} | "
            f"{row.redis_cpu_ms:.3f} | {row.worker_cpu_ms:.2f} | {row.proxy_cpu_ms:.2f} | {row.machine_cpu:.0f} | "
            f"{row.job_ms:.1f} | "
            f"{row.pg_conns} | {row.queued_bytes:,.0f} | {row.retained_bytes:,.0f} |")


STUB = """
import sys, time
sys.path.insert(0, sys.argv[1])
from fake_openai import FakeOpenAI, reply
server = FakeOpenAI(sys.argv[2])
server.default = reply("Hello from the stub.", delay=0.05)
server.start()
print(server.url, flush=True)
while True:
    time.sleep(3600)
"""


def _stub(c: Cluster) -> Any:
    """The 50 ms OpenAI-compatible stub, listening on the database address (reachable from hosts)."""
    import subprocess

    stub = subprocess.Popen([sys.executable, "-c", STUB, str(HERE.parent / "tests"), DB_IP],
                            stdout=subprocess.PIPE, text=True)
    url = stub.stdout.readline().strip() if stub.stdout else ""
    c.extra_env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url)
    return stub


if __name__ == "__main__":
    raise SystemExit(main())
