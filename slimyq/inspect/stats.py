"""Queue statistics: depth, speed and health of every queue in two pipelined round trips.

Round trip 1, per queue: LLEN, ZCARD of each registry, EXISTS paused, LRANGE of the first few
ids (the next to run), the three metric hashes (bounded: job types x buckets / 16 minutes) and
the queue's worker set. Round trip 2: ``enqueued_at`` of those few ids and each worker's liveness
fields. Nothing here grows with the number of jobs.

Throughput per minute over 1/5/15 minutes is a sliding window over the per-minute counters: the
current (partial) minute, the minutes before it, and the share of the oldest minute still inside
the window. Success rate and durations come from counters kept since metrics began (the worker
adds them); they are cumulative, not windowed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import redis

from slimyq.config import Settings
from slimyq.inspect._common import as_float, as_int, decode_map, text, when, worker_alive
from slimyq.runtime import keys
from slimyq.runtime.metrics import ALL, BUCKETS_MS, INF, quantile, sketch_quantile

FRONT = 10  # ids read from the head of a queue to find the oldest waiting job
_REGISTRIES = ("started", "scheduled", "deferred", "finished", "failed", "canceled")
WINDOWS = (1, 5, 15)


@dataclass(frozen=True)
class TypeStats:
    queue: str
    type: str
    completed: int
    failed: int
    retried: int
    success_rate: float | None
    avg_seconds: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    per_min_1: float
    per_min_5: float
    per_min_15: float


@dataclass(frozen=True)
class QueueStats:
    queue: str
    queued: int
    started: int
    scheduled: int
    deferred: int
    finished: int
    failed: int
    canceled: int
    workers: int
    capacity: int
    concurrency: int
    paused: bool
    oldest_age_seconds: float | None
    completed_total: int
    failed_total: int
    retried_total: int
    success_rate: float | None
    avg_seconds: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    per_min_1: float
    per_min_5: float
    per_min_15: float
    by_type: list[TypeStats] = field(default_factory=list)


def _rate(tp: dict[str, int], minutes: int, now: float) -> float:
    current = int(now // 60)
    frac = (now % 60) / 60
    total: float = sum(tp.get(str(m), 0) for m in range(current - minutes + 1, current + 1))
    total += tp.get(str(current - minutes), 0) * (1 - frac)
    return round(total / minutes, 2)


def _by_type(raw: dict[str, str]) -> dict[str, dict[str, str]]:
    """``T:rest`` fields grouped by job type ``T``."""
    out: dict[str, dict[str, str]] = {}
    for name, value in raw.items():
        job_type, sep, rest = name.partition(":")
        if sep:
            out.setdefault(job_type, {})[rest] = value
    return out


def _quantiles(hist: dict[str, str]) -> tuple[float | None, float | None]:
    """p50 and p95 from the sketch (``q:``/``qs:`` fields); the coarse buckets only for older data."""
    counts: dict[int, int] = {}
    sums: dict[int, float] = {}
    for name, value in hist.items():
        kind, _, index = name.partition(":")
        if kind in ("q", "qs") and index.lstrip("-").isdigit():
            if kind == "q":
                counts[int(index)] = as_int(value)
            else:
                sums[int(index)] = as_float(value)
    if counts:
        return sketch_quantile(counts, sums, 0.5), sketch_quantile(counts, sums, 0.95)
    buckets = {f.removeprefix("le:"): as_int(v) for f, v in hist.items() if f.startswith("le:")}
    return quantile(buckets, 0.5), quantile(buckets, 0.95)


def _significant(seconds: float | None) -> float | None:
    """Six significant digits: 1 ms keeps the same relative precision as 10 min (``round(x, 4)``
    would put 1.23 ms at 1.2 ms, 2.5% off)."""
    return None if seconds is None else float(f"{seconds:.6g}")


def _type_stats(queue: str, job_type: str, counts: dict[str, str], hist: dict[str, str],
                tp: dict[str, str], now: float) -> TypeStats:
    done, bad = as_int(counts.get("completed")), as_int(counts.get("failed"))
    count, total = as_int(hist.get("count")), as_float(hist.get("sum"))
    minutes = {m: as_int(v) for m, v in tp.items()}
    p50, p95 = _quantiles(hist)
    return TypeStats(
        queue=queue,
        type=job_type,
        completed=done,
        failed=bad,
        retried=as_int(counts.get("retried")),
        success_rate=round(done / (done + bad) * 100, 2) if done + bad else None,
        avg_seconds=_significant(total / count) if count else None,
        p50_seconds=_significant(p50),
        p95_seconds=_significant(p95),
        per_min_1=_rate(minutes, 1, now),
        per_min_5=_rate(minutes, 5, now),
        per_min_15=_rate(minutes, 15, now),
    )


def _round_one(pipe: Any, queue: str) -> None:
    pipe.llen(keys.queue(queue))
    pipe.zcard(keys.started(queue))
    pipe.zcard(keys.scheduled(queue))
    pipe.zcard(keys.deferred(queue))
    pipe.zcard(keys.finished(queue))
    pipe.zcard(keys.failed(queue))
    pipe.zcard(keys.canceled(queue))
    pipe.exists(keys.paused(queue))
    pipe.lrange(keys.queue(queue), 0, FRONT - 1)
    pipe.hgetall(keys.counts(queue))
    pipe.hgetall(keys.histogram(queue))
    pipe.hgetall(keys.throughput(queue))
    pipe.smembers(keys.workers(queue))


_PER_QUEUE = 13
_WORKER_FIELDS = ("last_heartbeat", "death", "slimyq_concurrency", "pid")


def queue_stats(conn: redis.Redis, settings: Settings, queues: list[str] | None = None,
                by_type: bool = False) -> list[QueueStats]:
    """One row per queue (configured queues by default); ``by_type`` adds a per-type breakdown."""
    names = queues or settings.queue_names
    for name in names:
        settings.queue(name)  # unknown queue: a usage error naming the known ones
    pipe = conn.pipeline(transaction=False)
    for name in names:
        _round_one(pipe, name)
    first = pipe.execute()
    rows = [first[i * _PER_QUEUE:(i + 1) * _PER_QUEUE] for i in range(len(names))]

    pipe = conn.pipeline(transaction=False)
    plan: list[tuple[list[str], list[str]]] = []
    for row in rows:
        front = [text(i) or "" for i in row[8]]
        workers = sorted(text(w) or "" for w in row[12])
        for job_id in front:
            pipe.hget(keys.job(job_id), "enqueued_at")
        for wkey in workers:
            pipe.hmget(wkey, *_WORKER_FIELDS)
        plan.append((front, workers))
    second = iter(pipe.execute())

    now = time.time()
    out: list[QueueStats] = []
    for name, row, (front, workers) in zip(names, rows, plan, strict=True):
        ages = [now - ts.timestamp() for ts in (when(next(second)) for _ in front) if ts is not None]
        live, capacity = 0, 0
        for _ in workers:
            values = next(second)
            fields = {f: text(v) or "" for f, v in zip(_WORKER_FIELDS, values, strict=True) if v is not None}
            if worker_alive(fields, settings.worker.heartbeat, now):
                live += 1
                capacity += as_int(fields.get("slimyq_concurrency"), 1)
        counts, hist, tp = (_by_type(decode_map(row[i])) for i in (9, 10, 11))
        total = _type_stats(name, ALL, counts.get(ALL, {}), hist.get(ALL, {}), tp.get(ALL, {}), now)
        types = sorted(t for t in {*counts, *hist, *tp} if t != ALL) if by_type else []
        out.append(QueueStats(
            queue=name,
            queued=int(row[0]),
            started=int(row[1]),
            scheduled=int(row[2]),
            deferred=int(row[3]),
            finished=int(row[4]),
            failed=int(row[5]),
            canceled=int(row[6]),
            workers=live,
            capacity=capacity,
            concurrency=settings.queue(name).concurrency,
            paused=bool(row[7]),
            oldest_age_seconds=round(max(ages), 1) if ages else None,
            completed_total=total.completed,
            failed_total=total.failed,
            retried_total=total.retried,
            success_rate=total.success_rate,
            avg_seconds=total.avg_seconds,
            p50_seconds=total.p50_seconds,
            p95_seconds=total.p95_seconds,
            per_min_1=total.per_min_1,
            per_min_5=total.per_min_5,
            per_min_15=total.per_min_15,
            by_type=[_type_stats(name, t, counts.get(t, {}), hist.get(t, {}), tp.get(t, {}), now) for t in types],
        ))
    return out


def histogram_buckets(conn: redis.Redis, queues: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """Raw histogram fields per queue and type (for the Prometheus exposition): one round trip."""
    pipe = conn.pipeline(transaction=False)
    for name in queues:
        pipe.hgetall(keys.histogram(name))
    return {name: _by_type(decode_map(raw)) for name, raw in zip(queues, pipe.execute(), strict=True)}


def counters(conn: redis.Redis, queues: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    pipe = conn.pipeline(transaction=False)
    for name in queues:
        pipe.hgetall(keys.counts(name))
    return {name: _by_type(decode_map(raw)) for name, raw in zip(queues, pipe.execute(), strict=True)}


BUCKET_BOUNDS = (*map(str, BUCKETS_MS), INF)
