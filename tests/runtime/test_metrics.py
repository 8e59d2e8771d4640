"""Metrics written by real workers: counters, histogram and throughput add up to what ran."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import redis
from harness import Env, WorkerProc, canaries, enqueue, tally
from hypothesis import given, settings
from hypothesis import strategies as st

from slimyq.runtime import metrics
from slimyq.runtime.codec import RQ_TIME


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


def test_three_3s_canaries_read_p50_p95_3s_and_done_counts_past_retention(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    """The review's case: three canaries of 3.0 s read p50/p95 of 3.0 s (not 3.75/4.875), never above the
    slowest; and `done` counts every completion, not the finished registry's size (keep_finished)."""
    import json

    env.reconfigure(queues={"database": {"keep_finished": 5}})
    slow = canaries(env, 3, "chat", sleep=3.0)
    quick = canaries(env, 12, "database")
    worker = start("chat", "database", "--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert tally(conn, slow + quick).finished == 15

    proc = env.cli("stats", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["queue"]: row for row in json.loads(proc.stdout)}
    chat = rows["chat"]
    hist = _hash(conn, "slimyq:hist:chat")
    assert hist["*:count"] == 3
    times = [conn.hmget(f"rq:job:{j}", "started_at", "ended_at") for j in slow]
    took = [(dt.datetime.strptime(e.decode(), RQ_TIME) - dt.datetime.strptime(b.decode(), RQ_TIME)).total_seconds()
            for b, e in times]
    assert 3.0 <= chat["p50_seconds"] <= chat["p95_seconds"] <= max(took) * 1.01, (chat, took)
    assert abs(chat["p95_seconds"] - 3.0) / 3.0 < 0.05, chat

    db = rows["database"]
    assert (db["finished"], db["completed_total"]) == (5, 12)
    table = env.cli("stats", "database")
    assert table.returncode == 0, table.stderr
    header, row = (line.split() for line in table.stdout.splitlines()[:2])
    assert header[:6] == ["queue", "queued", "started", "sched", "done", "failed"]
    assert row[:6] == ["database", "0", "0", "0", "12", "0"]


# ----------------------------------------------------------------- the quantile sketch (pure)


def _sketch(durations: list[float]) -> tuple[dict[int, int], dict[int, float]]:
    counts: dict[int, int] = {}
    sums: dict[int, float] = {}
    for _key, name, _kind, amount in metrics.increments("q", [metrics.Ended("t", "completed", d) for d in durations]):
        kind, _, index = name.partition(":")[2].partition(":")
        if kind == "q":
            counts[int(index)] = int(amount)
        elif kind == "qs":
            sums[int(index)] = float(amount)
    return counts, sums


def _exact(durations: list[float], q: float) -> float:
    import math

    ordered = sorted(durations)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def test_sketch_three_equal_durations_read_exactly() -> None:
    counts, sums = _sketch([3.0, 3.0, 3.0])
    assert metrics.sketch_quantile(counts, sums, 0.5) == 3.0
    assert metrics.sketch_quantile(counts, sums, 0.95) == 3.0
    assert metrics.sketch_quantile({}, {}, 0.5) is None


def test_sketch_is_within_5_percent_from_1ms_to_10min() -> None:
    import random

    rng = random.Random(16)
    for _ in range(200):
        n = rng.randint(1, 400)
        durations = [10 ** rng.uniform(-3, 2.778) for _ in range(n)]  # 1 ms .. 10 min, log-uniform
        counts, sums = _sketch(durations)
        for q in (0.5, 0.95, 0.99):
            got, want = metrics.sketch_quantile(counts, sums, q), _exact(durations, q)
            assert got is not None and abs(got - want) / want < 0.05, (q, got, want)


def test_sketch_buckets_are_few_and_merge_by_adding() -> None:
    assert metrics.sketch_index(600.0) - metrics.sketch_index(0.001) < 400  # 1 ms .. 10 min
    a, b = [0.01, 0.2, 0.2], [0.5, 30.0]
    ca, sa = _sketch(a)
    cb, sb = _sketch(b)
    merged = {i: ca.get(i, 0) + cb.get(i, 0) for i in {*ca, *cb}}
    msums = {i: sa.get(i, 0.0) + sb.get(i, 0.0) for i in {*sa, *sb}}
    assert (merged, msums) == _sketch(a + b)


def _increments_per_attempt(queue: str, ended: list[metrics.Ended], now: float) -> dict[tuple[str, str], str]:
    """The rule spelled out, one attempt at a time (the grouped version must add up to the same)."""
    from collections import Counter

    from slimyq.runtime import keys

    minute = int(now // 60)
    ints: Counter[tuple[str, str]] = Counter()
    floats: dict[tuple[str, str], float] = {}
    counts, hist, tp = keys.counts(queue), keys.histogram(queue), keys.throughput(queue)
    for e in ended:
        for t in (e.job_type, metrics.ALL):
            ints[(counts, f"{t}:{e.outcome}")] += 1
            if e.outcome == "retried":
                continue
            ints[(hist, f"{t}:le:{metrics.bucket_of(e.seconds)}")] += 1
            index = metrics.sketch_index(e.seconds)
            ints[(hist, f"{t}:q:{index}")] += 1
            floats[(hist, f"{t}:qs:{index}")] = floats.get((hist, f"{t}:qs:{index}"), 0.0) + e.seconds
            ints[(hist, f"{t}:count")] += 1
            floats[(hist, f"{t}:sum")] = floats.get((hist, f"{t}:sum"), 0.0) + e.seconds
            ints[(tp, f"{t}:{minute}")] += 1
    return {**{k: str(n) for k, n in ints.items()}, **{k: f"{v:.6f}" for k, v in floats.items()}}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "message_validation"]),
                          st.sampled_from(["completed", "failed", "retried"]),
                          st.floats(min_value=0, max_value=4000, allow_nan=False)), max_size=60))
def test_grouped_increments_add_up_to_the_per_attempt_rule(attempts: list[tuple[str, str, float]]) -> None:
    ended = [metrics.Ended(t, o, s) for t, o, s in attempts]
    got = metrics.increments("q", ended, now=1_764_000_000.0)
    as_dict = {(k, f): amount for k, f, _kind, amount in got}
    assert len(as_dict) == len(got)  # each field once
    assert as_dict == _increments_per_attempt("q", ended, 1_764_000_000.0)
    assert all(kind == ("f" if ":qs:" in f or f.endswith(":sum") else "i") for _k, f, kind, _a in got)
