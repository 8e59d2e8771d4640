"""Queue metrics kept in Redis: counters, a duration histogram and per-minute throughput.

Layout (per queue; ``T`` is a job type, ``*`` all types):
- ``slimyq:counts:<q>``  hash: ``T:completed``, ``T:failed``, ``T:retried`` (and ``*:...``)
- ``slimyq:hist:<q>``    hash: ``T:le:<ms>`` bucket counts (cumulative on read, not on write),
  ``T:sum`` (seconds, float), ``T:count``
- ``slimyq:tp:<q>``      hash: ``T:<unix minute>`` jobs ended in that minute (completed or failed)

The worker adds them up per completion batch and the completion script applies them in the same
round trip, so metrics cost no extra round trip per job. They survive worker restarts.
"""

from __future__ import annotations

import bisect
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


def bucket_of(seconds: float) -> str:
    ms = seconds * 1000
    index = bisect.bisect_left(BUCKETS_MS, ms)
    return str(BUCKETS_MS[index]) if index < len(BUCKETS_MS) else INF


@dataclass(frozen=True)
class Ended:
    """One attempt that ended, as metrics see it."""

    job_type: str
    outcome: str  # completed | failed | retried
    seconds: float


Stat = tuple[str, str, str, str]  # key, field, kind (i|f), amount


def increments(queue: str, ended: Iterable[Ended], now: float | None = None) -> list[Stat]:
    """The hash increments for a batch of ended attempts, summed per field."""
    minute = int((now or time.time()) // 60)
    ints: Counter[tuple[str, str]] = Counter()
    floats: dict[tuple[str, str], float] = {}
    counts, hist, tp = keys.counts(queue), keys.histogram(queue), keys.throughput(queue)
    for e in ended:
        for t in (e.job_type, ALL):
            ints[(counts, f"{t}:{e.outcome}")] += 1
            if e.outcome == "retried":
                continue
            ints[(hist, f"{t}:le:{bucket_of(e.seconds)}")] += 1
            ints[(hist, f"{t}:count")] += 1
            floats[(hist, f"{t}:sum")] = floats.get((hist, f"{t}:sum"), 0.0) + e.seconds
            ints[(tp, f"{t}:{minute}")] += 1
    stats: list[Stat] = [(k, f, "i", str(n)) for (k, f), n in ints.items()]
    stats += [(k, f, "f", f"{v:.6f}") for (k, f), v in floats.items()]
    return stats


def quantile(buckets: dict[str, int], q: float) -> float | None:
    """Estimate a quantile (seconds) from bucket counts keyed by upper bound in ms (or ``inf``)."""
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
