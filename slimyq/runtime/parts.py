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
fastest of a few ``SELECT 1``, :func:`round_trip`) on a job thread's open connection, then again
every ``PROBE_EVERY`` seconds, and splits from ``SPLIT_LATENCY`` (on this machine: 0.09 ms to
PostgreSQL or MariaDB on the same host; 0.22 ms through a local TCP proxy without delay, where the
split ran 887 jobs/s against one batch's 730, and stays one batch: the margin is kept for a busy
host's noise; 1.3 ms through it with 1 ms of delay).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from slimyq.runtime.codec import ClaimedJob

log = logging.getLogger("slimyq.worker")

SPLIT_LATENCY = 0.0003  # seconds per round trip (the fastest of a few ``SELECT 1``) from which claims are split
JOIN_LATENCY = 0.0002  # ...and below which they are one batch again (between the two: as before)
PROBE_EVERY = 60.0  # seconds between two measurements of the round trip
PROBES = 5
PROBE_SWITCH_INTERVAL = 1e-5  # seconds: the GIL's switch interval while probing (Python's default is 5 ms)


def at_once(batching: bool, concurrency: int, database_url: str, queue: str) -> int:
    """The most transactions a queue process runs a claim as: one on SQLite, without batching, or
    on a queue without a batchable job type of its own (nothing to split, nothing to measure)."""
    from slimyq.jobs import registry

    if not batching or database_url.lower().startswith("sqlite"):
        return 1
    if not any(jt.queue == queue and jt.batchable for jt in registry.all_types()):
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
    from slimyq.runtime.batch import claim_order

    position = claim_order(batch)
    return [sorted(part, key=position) for part in out]


def round_trip(db: Any, probes: int = PROBES) -> float:
    """The fastest of ``probes`` ``SELECT 1`` on this thread's open connection, in seconds.

    Sent on the driver's cursor, not through peewee (no statement metrics, no trace span: it is
    no job's). A thread that waits for a reply gives up the GIL, and getting it back from a busy
    thread can take Python's switch interval (5 ms), which would make a database on the same
    host look far away exactly when the worker is busiest: the interval is lowered while
    probing."""
    interval = sys.getswitchinterval()
    try:
        sys.setswitchinterval(PROBE_SWITCH_INTERVAL)
        best = float("inf")
        for _ in range(probes):
            cursor = db.cursor()
            try:
                start = time.perf_counter()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                best = min(best, time.perf_counter() - start)
            finally:
                cursor.close()
        return best
    finally:
        sys.setswitchinterval(interval)


class Splitter:
    """Per process: how many transactions at once right now (1 or ``most``), from the measured
    round trip (split from ``SPLIT_LATENCY``, one batch again below ``JOIN_LATENCY``)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.now = 1  # one batch per claim until the first measurement says otherwise
        self.latency: float | None = None
        self._due = 0.0
        self._lock = threading.RLock()  # asked whether this thread holds it (a timeout may land anywhere)

    def due(self) -> bool:
        return self.most > 1 and time.monotonic() >= self._due

    def measure(self, opened: Callable[[], Any]) -> None:
        """Time the round trip on this thread's connection if a measurement is due and the
        database is open on this thread (``opened()``: None if not; a probe never opens or
        connects: the thread's next job does); one thread at a time does it. A timeout raised
        into the thread (the watchdog's) goes through."""
        from slimyq.jobs.base import Interrupted

        if not self.due():
            return
        try:
            if not self._lock.acquire(blocking=False) or not self.due():  # another thread measures
                return
            db = opened()
            if db is None or db.is_closed():
                return
            self._due = time.monotonic() + PROBE_EVERY
            latency = round_trip(db)
        except Interrupted:
            raise
        except Exception as exc:  # the next job meets the same failure, classified as usual
            log.debug("could not time the database's round trip: %s", exc)
            return
        finally:
            if self._lock._is_owned():  # type: ignore[attr-defined]
                self._lock.release()
        now = self.most if latency >= SPLIT_LATENCY else 1 if latency < JOIN_LATENCY else self.now
        if now != self.now:
            log.info("database round trip %.2f ms: %s", latency * 1000,
                     f"claims run as up to {now} transactions at once" if now > 1 else "one transaction per claim")
        self.latency, self.now = latency, now
