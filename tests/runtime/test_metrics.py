"""Metrics written by real workers: counters, histogram and throughput add up to what ran."""

from __future__ import annotations

from collections.abc import Callable

import redis
from harness import Env, WorkerProc, canaries, enqueue, tally

from slimyq.runtime import metrics


def _hash(conn: redis.Redis, key: str) -> dict[str, float]:
    raw: dict[bytes, bytes] = conn.hgetall(key)  # type: ignore[assignment]
    out = {}
    for k, v in raw.items():
        try:
            out[k.decode()] = float(v)
        except ValueError:
            continue
    return out


def test_counters_histogram_and_throughput(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"chat": {"attempts": 2, "backoff_base": 0.1}})
    ok = canaries(env, 20, "chat", sleep=0.01)
    flaky = canaries(env, 5, "chat", fail=1)
    bad = canaries(env, 3, "chat", fail=9)
    invalid = enqueue(env, "canary", [{"sleepSeconds": 0}], "chat")
    conn.hset(f"rq:job:{invalid[0]}", "data", b"not json")  # refused: failed at once, never retried
    worker = start("chat", "--burst")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    t = tally(conn, ok + flaky + bad + invalid)
    assert (t.finished, t.failed, t.duplicated) == (25, 4, 0)

    counts = _hash(conn, "slimyq:counts:chat")
    assert counts["*:completed"] == 25 and counts["canary:completed"] == 25
    assert counts["*:retried"] == 8 and counts["canary:retried"] == 8
    assert counts["*:failed"] == 4 and counts["canary:failed"] == 4

    hist = _hash(conn, "slimyq:hist:chat")
    assert hist["*:count"] == 29 and hist["canary:count"] == 29
    buckets = {k.split(":le:")[1]: int(v) for k, v in hist.items() if k.startswith("*:le:")}
    assert sum(buckets.values()) == 29
    p50, p95 = metrics.quantile(buckets, 0.5), metrics.quantile(buckets, 0.95)
    assert p50 is not None and p95 is not None and 0 < p50 <= p95 < 1.0
    assert 0 < hist["*:sum"] < 29 * 1.0

    tp = _hash(conn, "slimyq:tp:chat")
    assert sum(v for k, v in tp.items() if k.startswith("*:")) == 29

    # The worker's own RQ counters (what `rq info` and `slimyq workers` read) add up as well.
    (worker_key,) = [k for k in conn.scan_iter("rq:worker:*") if not k.endswith(b":executions")]
    w = _hash(conn, worker_key.decode()) if conn.type(worker_key) == b"hash" else {}
    assert w.get("successful_job_count") == 25
    assert w.get("failed_job_count") == 12  # as RQ counts: every attempt that raised (4 failed, 8 retried)
