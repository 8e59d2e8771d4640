"""How many database batches a queue process runs at once, and which jobs go in each.

On SQLite (one writer at a time) a claim is one batch (:mod:`slimyq.runtime.batch`). On PostgreSQL
and MySQL a batch's time is CPU and round trips. On the same host the round trips are short, the
worker's CPU is the limit and one batch per claim is cheapest (one claim, one commit, one
completion call for ten jobs). With a network between worker and database the round trips are
most of it, and a process that runs one batch after another waits on them: there a claim is split
by user (:func:`parts`), each user's jobs a transaction of their own on a thread and connection of
their own, run at once, which overlaps the waits (a job alone in its part runs as without
batching: its own transaction, no savepoint). Measured with create-conversation jobs of 50 users
at concurrency 10 on PostgreSQL: on the same host one batch per claim ran 1,270-1,344 jobs/s and
the split 875; with 1 ms added to every round trip one batch ran 187 and the split 704 (RQ's
SimpleWorker pool of ten processes 426).

Which it is, is measured, not configured: :class:`Splitter` times the database's round trip (the
fastest of a few ``SELECT 1``) on a job thread's connection, then again every ``PROBE_EVERY``
seconds, and splits while it is ``SPLIT_LATENCY`` or more (on this machine: 0.09 ms to PostgreSQL
or MariaDB on the same host, 0.22 ms through a TCP proxy without delay, where the split already
ran 887 jobs/s against one batch's 730).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slimyq.runtime.codec import ClaimedJob

log = logging.getLogger("slimyq.worker")

SPLIT_LATENCY = 0.00015  # seconds per round trip (the fastest of a few ``SELECT 1``) from which claims are split
PROBE_EVERY = 60.0  # seconds between two measurements of the round trip
PROBES = 5


def at_once(batching: bool, concurrency: int, database_url: str) -> int:
    """The most transactions a queue process runs a claim as: one on SQLite (or without batching)."""
    if not batching or database_url.startswith("sqlite"):
        return 1
    return max(1, concurrency)


def parts(batch: list[ClaimedJob], most: int) -> list[list[ClaimedJob]]:
    """``batch`` as at most ``most`` transactions, run at once.

    The jobs of one user (the job's ``meta``: slimyq's own types write only that user's rows) stay
    in one part, in claim order: two transactions of a claim never write one conversation, so they
    neither deadlock each other (on MySQL a message's foreign key share-locks its conversation,
    whose ``UPDATE`` then wants it) nor apply one conversation's jobs out of order. A job without a
    user (a plain RQ client's, a team's type) is a group of its own; should such transactions meet
    after all, the database's deadlock is a conflict and their jobs run again. Each group goes to
    the part with the fewest jobs so far."""
    if not batch:
        return []
    if most <= 1:
        return [batch]
    groups: dict[str, list[ClaimedJob]] = {}
    for job in batch:
        user = job.meta.get("user")
        groups.setdefault(f"u:{user}" if isinstance(user, str | int) else f"j:{job.member}", []).append(job)
    out: list[list[ClaimedJob]] = [[] for _ in range(min(most, len(groups)))]
    for group in groups.values():
        min(out, key=len).extend(group)
    position = {id(job): i for i, job in enumerate(batch)}
    return [sorted(part, key=lambda job: position[id(job)]) for part in out]


def round_trip(db: Any, probes: int = PROBES) -> float:
    """The fastest of ``probes`` ``SELECT 1`` on this thread's connection, in seconds (outside any
    transaction: peewee's connections are in autocommit between them)."""
    best = float("inf")
    for _ in range(probes):
        start = time.perf_counter()
        db.execute_sql("SELECT 1").fetchall()
        best = min(best, time.perf_counter() - start)
    return best


class Splitter:
    """Per process: how many batches at once right now (1 or ``most``), from the measured round trip."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.now = 1  # one batch per claim until the first measurement says otherwise
        self.latency: float | None = None
        self._due = 0.0
        self._lock = threading.Lock()

    def measure(self, database: Callable[[], Any]) -> None:
        """Time the round trip on this thread's connection (``database()``) if a measurement is due
        (one thread at a time does it, between two jobs)."""
        if self.most <= 1 or time.monotonic() < self._due or not self._lock.acquire(blocking=False):
            return
        try:
            self._due = time.monotonic() + PROBE_EVERY
            latency = round_trip(database())
        except Exception as exc:  # the batch meets the same failure, classified as usual
            log.debug("could not time the database's round trip: %s", exc)
            return
        finally:
            self._lock.release()
        now = self.most if latency >= SPLIT_LATENCY else 1
        if now != self.now:
            log.info("database round trip %.2f ms: %s", latency * 1000,
                     f"claims run as up to {now} transactions at once" if now > 1 else "one transaction per claim")
        self.latency, self.now = latency, now
