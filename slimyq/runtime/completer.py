"""The completer thread: writes job outcomes in batches, with metrics and the job history.

Executor threads hand over ``(job, result)``; this thread decides each outcome (finished, retried,
failed), writes a batch with one ``COMPLETE`` script call, adds up metrics and sends them along at
most every ``STATS_EVERY`` seconds, and hands every attempt to the job-history recorder
(write-behind: the database never slows or fails a job). A Redis outage makes it wait and retry
the same batch: outcomes are never dropped while the process lives.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from slimyq.runtime import codec, keys
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result
from slimyq.runtime.metrics import Ended, increments
from slimyq.runtime.outcome import Completion, decide

if TYPE_CHECKING:
    from slimyq.history.recorder import HistoryRecorder
    from slimyq.runtime.worker import QueueWorker

log = logging.getLogger("slimyq.worker")

TRIM_GRACE = 30  # seconds a trimmed finished/failed job stays readable (for `enqueue --wait`)
BATCH = 256
STATS_EVERY = 0.25  # seconds between metric flushes

Item = tuple[ClaimedJob, Result]


def enqueue_dependents(conn: redis.Redis, parent_ids: list[str]) -> None:
    """Enqueue the dependents (``depends_on``) of jobs that just ended, with RQ's own rules
    (``Queue.enqueue_dependents``: every dependency finished, or failed where the dependent has
    ``allow_failure``; canceled dependents stay). Rare, so it is RQ's code path, not Lua."""
    from rq import Queue
    from rq.job import Job
    from rq.serializers import JSONSerializer

    for job_id in parent_ids:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            Queue(job.origin, connection=conn, serializer=JSONSerializer).enqueue_dependents(job)
        except Exception as exc:  # rq's ReadyJobRegistry.cleanup() picks up what is left
            log.warning("could not enqueue the dependents of %s: %s", job_id, exc)


class Completer:
    def __init__(self, worker: QueueWorker) -> None:
        self.w = worker
        self._queue: queue_mod.Queue[Item | None] = queue_mod.Queue()
        self._pending_stats: list[Ended] = []
        self._stats_due = 0.0
        self.history: HistoryRecorder | None = None
        if worker.settings.history:
            from slimyq.history.recorder import HistoryRecorder

            self.history = HistoryRecorder(worker.database)
        self._thread = threading.Thread(target=self._loop, name="slimyq-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, job: ClaimedJob, result: Result) -> None:
        self._queue.put((job, result))

    def close(self, timeout: float) -> None:
        """Write everything handed over so far, then stop (and flush the job history)."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        if self.history is not None:
            self.history.close(timeout=5.0)

    @property
    def history_dropped(self) -> int:
        return self.history.dropped if self.history is not None else 0

    def _loop(self) -> None:
        """Write outcomes in batches; a ``None`` in the queue means: write what came before, stop."""
        while True:
            try:
                # Metrics held back (they ride along with completions) are written once the
                # worker goes quiet, so `slimyq stats` never lags behind an idle worker.
                first = self._queue.get(timeout=STATS_EVERY if self._pending_stats else None)
            except queue_mod.Empty:
                self._write([], flush_stats=True)
                continue
            closing = first is None
            batch = [] if first is None else [first]
            while len(batch) < BATCH and not closing:
                try:
                    item = self._queue.get_nowait()
                except queue_mod.Empty:
                    break
                if item is None:
                    closing = True
                else:
                    batch.append(item)
            if batch or closing:
                self._write(batch, flush_stats=closing)
            if closing:
                return

    def _stats(self, completions: list[Completion], now: float, flush: bool) -> list[tuple[str, str, str, str]]:
        """Metrics ride along with a completion at most every STATS_EVERY seconds, summed: a few
        HINCRBYs per interval instead of ten per job."""
        self._pending_stats.extend(c.ended for c in completions)
        if not self._pending_stats or not (flush or now >= self._stats_due):
            return []
        ended, self._pending_stats = self._pending_stats, []
        self._stats_due = now + STATS_EVERY
        stats = increments(self.w.queue, ended, now)
        wkey = keys.worker(self.w.name)
        # As RQ's worker counts them: every attempt that raised is a failed job, retried or not.
        ok = sum(1 for e in ended if e.outcome == "completed")
        failed = len(ended) - ok
        working = sum(e.seconds for e in ended)
        stats += [(wkey, "successful_job_count", "i", str(ok)), (wkey, "failed_job_count", "i", str(failed)),
                  (wkey, "total_working_time", "f", f"{working:.6f}")]
        return stats

    def _write(self, batch: list[Item], flush_stats: bool = False) -> None:
        w = self.w
        completions = [decide(job, result, w.qs, w.name) for job, result in batch]
        now = time.time()
        stats = self._stats(completions, now, flush_stats)
        args: list[Any] = [w.queue, w.name, int(now), codec.rq_now(), w.qs.keep_finished,
                           w.qs.keep_failed, TRIM_GRACE, len(completions), len(stats)]
        for c in completions:
            args.extend(c.args)
        for stat in stats:
            args.extend(stat)
        errors = 0
        while True:
            try:
                applied: Any = w.scripts.complete(args=args)
                break
            except redis.RedisError as exc:
                errors += 1
                if w.hard.is_set():
                    return
                w.wait_for_redis(exc, errors)
                if w.stopping.is_set() and errors > 50:
                    return  # give up: the jobs stay started and are recovered as abandoned
        self._record(batch, completions, applied)
        parents = [job.id for (job, _), flag in zip(batch, applied, strict=False) if int(flag) == 2]
        if parents:
            enqueue_dependents(w.conn, parents)
        with w.lock:
            for job, _ in batch:
                w.inflight.pop(f"{job.id}:{job.execution_id}", None)
            w.lock.notify_all()

    def _record(self, batch: list[Item], completions: list[Completion], applied: list[Any]) -> None:
        """Hand each applied attempt to the job history (stale ones were someone else's to write)."""
        if self.history is None:
            return
        from slimyq.history.recorder import RunRow

        for (job, result), c, flag in zip(batch, completions, applied, strict=False):
            if not int(flag):
                continue
            self.history.record(RunRow(
                job_id=job.id, queue=self.w.queue, job_type=result.job_type, attempt=len(job.attempts) + 1,
                state=c.label, user_id=result.user, enqueued=codec.parse_rq_time(job.raw.get("enqueued_at")),
                started=result.started, ended=result.ended or result.started, duration_ms=result.duration * 1000,
                error_type=None if result.ok else result.error_type,
                error_message=None if result.ok else result.error, worker=self.w.name,
            ))
