"""Queue metrics kept in Redis: counters, a duration histogram and per-minute throughput.

Layout (per queue; ``T`` is a job type, ``*`` all types):
- ``slimyq:counts:<q>``  hash: ``T:completed``, ``T:failed``, ``T:retried`` (and ``*:...``)
- ``slimyq:hist:<q>``    hash: ``T:le:<ms>`` bucket counts (cumulative on read, not on write),
  ``T:sum`` (seconds, float), ``T:count``; and the quantile sketch: ``T:q:<i>`` count and
  ``T:qs:<i>`` sum (seconds) of the durations in log bucket ``i``
- ``slimyq:tp:<q>``      hash: ``T:<unix minute>`` jobs ended in that minute (completed or failed)

The worker adds them up per completion batch and the completion script applies them in the same
round trip, so metrics cost no extra round trip per job. They survive worker restarts.

Quantiles come from the sketch, not the coarse ``le`` buckets (those stay for Prometheus): bucket
``i`` holds durations in ``(GAMMA**(i-1), GAMMA**i]`` milliseconds, so a bucket is 4% wide at any
scale, from microseconds to hours, and a few hundred buckets cover 1 ms to 10 min. A quantile is
the mean of the bucket holding its rank (nearest-rank): within 4% of the true value, and exact when
the durations in that bucket are equal (three 3.0 s jobs read p50 = p95 = 3.0 s). Counts and sums
only ever add, so sketches from many workers merge by HINCRBY.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from slimyq.runtime import keys

# Upper bounds of the duration buckets, in milliseconds (the last bucket is +Inf).
BUCKETS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)
INF = "inf"
ALL = "*"
THROUGHPUT_MINUTES = 16
GAMMA = 1.04  # sketch bucket width: relative error of a quantile at most GAMMA - 1
_LOG_GAMMA = math.log(GAMMA)
_MIN_MS = 0.001  # durations below 1 µs share the lowest bucket


def bucket_of(seconds: float) -> str:
    ms = seconds * 1000
    index = bisect.bisect_left(BUCKETS_MS, ms)
    return str(BUCKETS_MS[index]) if index < len(BUCKETS_MS) else INF


def sketch_index(seconds: float) -> int:
    """The sketch bucket of a duration: ``ceil(log_GAMMA(ms))``."""
    return math.ceil(math.log(max(seconds * 1000, _MIN_MS)) / _LOG_GAMMA - 1e-9)


@dataclass(frozen=True)
class Ended:
    """One attempt that ended, as metrics see it."""

    job_type: str
    outcome: str  # completed | failed | retried
    seconds: float


Stat = tuple[str, str, str, str]  # key, field, kind (i|f), amount


def increments(queue: str, ended: Iterable[Ended], now: float | None = None) -> list[Stat]:
    """The hash increments for a batch of ended attempts, summed per field. Attempts are counted
    per (type, outcome, bucket, sketch bucket) first and the fields named once per such group:
    a second's worth of trivial jobs shares a handful of groups (naming ~14 fields per job took
    a tenth of a trivial job's CPU). Sums add up each field's durations in the attempts' order."""
    minute = int((now or time.time()) // 60)
    groups: Counter[tuple[str, str, str, int]] = Counter()  # (type, outcome, le bucket, sketch bucket)
    sums: dict[tuple[str, int], float] = {}  # (type or ALL, sketch bucket): seconds
    totals: dict[str, float] = {}  # type or ALL: seconds
    for e in ended:
        if e.outcome == "retried":
            groups[(e.job_type, e.outcome, "", 0)] += 1
            continue
        index = sketch_index(e.seconds)
        groups[(e.job_type, e.outcome, bucket_of(e.seconds), index)] += 1
        for t in (e.job_type, ALL):
            sums[(t, index)] = sums.get((t, index), 0.0) + e.seconds
            totals[t] = totals.get(t, 0.0) + e.seconds
    ints: Counter[tuple[str, str]] = Counter()
    counts, hist, tp = keys.counts(queue), keys.histogram(queue), keys.throughput(queue)
    for (job_type, outcome, le, index), n in groups.items():
        for t in (job_type, ALL):
            ints[(counts, f"{t}:{outcome}")] += n
            if outcome == "retried":
                continue
            ints[(hist, f"{t}:le:{le}")] += n
            ints[(hist, f"{t}:q:{index}")] += n
            ints[(hist, f"{t}:count")] += n
            ints[(tp, f"{t}:{minute}")] += n
    stats: list[Stat] = [(k, f, "i", str(n)) for (k, f), n in ints.items()]
    stats += [(hist, f"{t}:qs:{index}", "f", f"{v:.6f}") for (t, index), v in sums.items()]
    stats += [(hist, f"{t}:sum", "f", f"{v:.6f}") for t, v in totals.items()]
    return stats


def sketch_quantile(counts: dict[int, int], sums: dict[int, float], q: float) -> float | None:
    """A quantile (seconds) from the sketch: the mean duration of the bucket holding rank ``ceil(q * n)``."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(math.ceil(q * total - 1e-9), 1)
    seen = 0
    for index in sorted(counts):
        n = counts[index]
        seen += n
        if n > 0 and seen >= rank:
            return sums.get(index, 0.0) / n
    return None


def quantile(buckets: dict[str, int], q: float) -> float | None:
    """Estimate a quantile (seconds) from the coarse bucket counts keyed by upper bound in ms (or ``inf``).

    Only for metrics written before the sketch existed; :func:`sketch_quantile` is the accurate one.
    """
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound in [*map(str, BUCKETS_MS), INF]:
        n = buckets.get(bound, 0)
        upper = float(bound) if bound != INF else lower * 2 or 1.0
        if n and seen + n >= rank:
            fraction = (rank - seen) / n
            return (lower + (upper - lower) * fraction) / 1000
        seen += n
        lower = upper
    return lower / 1000


def stale_minutes(fields: Iterable[str], now: float | None = None) -> list[str]:
    """Throughput fields older than the window we report (15 minutes), to delete."""
    cutoff = int((now or time.time()) // 60) - THROUGHPUT_MINUTES
    old = []
    for field in fields:
        _, _, minute = field.rpartition(":")
        if minute.isdigit() and int(minute) < cutoff:
            old.append(field)
    return old
