"""The completer thread: writes job outcomes in batches, with metrics and the job history.

Executor threads hand over ``(job, result)``; this thread decides each outcome (finished, retried,
failed), writes a batch with one ``COMPLETE`` script call, adds up metrics and sends them along at
most every ``STATS_EVERY`` seconds, and hands every attempt to the job-history recorder
(write-behind: the database never slows or fails a job). A Redis outage makes it wait and retry
the same batch: outcomes are never dropped while the process lives.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from slimyq.obs import ops
from slimyq.runtime import codec, joblog, keys
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.dependents import enqueue_dependents
from slimyq.runtime.execute import Result
from slimyq.runtime.metrics import Ended, Stat, increments
from slimyq.runtime.outcome import Completion, decide, refusal

if TYPE_CHECKING:
    from slimyq.history.recorder import HistoryRecorder
    from slimyq.runtime.worker import QueueWorker

log = logging.getLogger("slimyq.worker")

TRIM_GRACE = 30  # seconds a trimmed finished/failed job stays readable (for `enqueue --wait`)
BATCH = 256
STATS_EVERY = 1.0  # seconds between metric flushes (one writes a few hundred sketch fields)
OPS_EVERY = 1.0  # seconds an idle completer waits before it looks for database/OpenAI sums
WRITE_TRIES = 5  # a batch whose writing raised (a bug, not Redis) is tried this often, then the thread ends

Item = tuple[ClaimedJob, Result]
Prepared = tuple[list[Completion], float, list[Ended], list[Stat]]  # outcomes, time, attempts counted, increments


def script_error(exc: redis.RedisError) -> bool:
    """A Lua error raised by the script itself (not a connection, failover or memory condition)."""
    if not isinstance(exc, redis.ResponseError) or isinstance(
            exc, redis.exceptions.ReadOnlyError | redis.exceptions.OutOfMemoryError | redis.exceptions.NoScriptError):
        return False
    text = str(exc)
    return "script" in text.lower() and not text.startswith(("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN"))


class Completer:
    def __init__(self, worker: QueueWorker) -> None:
        self.w = worker
        self._queue: queue_mod.SimpleQueue[list[Item] | None] = queue_mod.SimpleQueue()
        self._pending_stats: list[Ended] = []
        self._stats_due = 0.0
        self.history: HistoryRecorder | None = None
        if worker.settings.history:
            from slimyq.history.recorder import HistoryRecorder

            self.history = HistoryRecorder(worker.database)
        self.unwritten: set[str] = set()  # members handed over whose outcome is not written yet
        self._prepared: tuple[str, Prepared] | None = None  # the batch being tried, by token
        self.failed = False  # the thread ended on an error: outcomes are no longer written
        self._thread = threading.Thread(target=self._run, name="slimyq-completer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, outcomes: list[Item]) -> None:
        """Hand over outcomes (the caller holds the worker's lock): they are written in one call,
        in this order (jobs retried at once go back to the front of their queue in it)."""
        for job, _ in outcomes:
            self.unwritten.add(job.member)
        self._queue.put(outcomes)

    def close(self, timeout: float) -> None:
        """Write everything handed over so far, then stop (and flush the job history)."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        if self.history is not None:
            self.history.close(timeout=5.0)

    @property
    def history_dropped(self) -> int:
        return self.history.dropped if self.history is not None else 0

    def _run(self) -> None:
        """The thread: should writing fail for good, no further job starts in this process, which
        exits with ``EXIT_UNWRITTEN``; the jobs whose outcome was lost are charged an attempt."""
        try:
            self._loop()
        except BaseException:
            from slimyq.runtime.worker import EXIT_UNWRITTEN

            self.failed = True
            log.error("the completer thread ended: job outcomes can no longer be written; restarting this "
                      "worker process")
            self.w.exit_code = EXIT_UNWRITTEN
            self.w.request_stop()
            raise

    def _loop(self) -> None:
        """Write outcomes in batches; a ``None`` in the queue means: write what came before, stop."""
        while True:
            try:
                # Metrics held back (they ride along with completions) are written once the
                # worker goes quiet, so `slimyq stats` never lags behind an idle worker.
                first = self._queue.get(timeout=STATS_EVERY if self._pending_stats or ops.pending() else OPS_EVERY)
            except queue_mod.Empty:
                if self._pending_stats or ops.pending():  # database/OpenAI sums ride along too
                    self._write_retrying([], flush_stats=True)
                continue
            closing = first is None
            batch = [] if first is None else list(first)
            while len(batch) < BATCH and not closing:
                try:
                    item = self._queue.get_nowait()
                except queue_mod.Empty:
                    break
                if item is None:
                    closing = True
                else:
                    batch.extend(item)
            if batch or closing:
                self._write_retrying(batch, flush_stats=closing)
            if closing:
                return

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _write_retrying(self, batch: list[Item], flush_stats: bool) -> None:
        """Write a batch; should that raise, log it, back off and write the same batch again under
        the same token (``COMPLETE`` answers a repeated token with its first answer, writing
        nothing twice). Still failing after ``WRITE_TRIES``, the thread ends: the worker sees it
        and restarts its process, putting back the jobs whose outcome was not written."""
        token = os.urandom(8).hex()
        try:
            for attempt in range(1, WRITE_TRIES + 1):
                try:
                    self._write(batch, flush_stats, token)
                    return
                except Exception:
                    log.exception("writing a batch of %d outcome(s) failed (try %d of %d)", len(batch), attempt,
                                  WRITE_TRIES)
                    if attempt == WRITE_TRIES:
                        raise
                    time.sleep(min(0.1 * 2 ** attempt, 2.0))
        finally:
            self._prepared = None

    def _stats(self, completions: list[Completion], now: float, flush: bool) -> tuple[list[Ended], list[Stat]]:
        """Metrics ride along with a completion at most every STATS_EVERY seconds, summed: a few
        HINCRBYs per interval instead of ten per job. Returns the attempts to count and the
        increments; the caller forgets them once they are written."""
        # A batch-mate's rollback is no attempt of the job's own: its rerun is what counts.
        pending = self._pending_stats + [c.ended for c in completions if c.counted]
        if not (pending or ops.pending()) or not (flush or now >= self._stats_due):
            return pending, []
        stats = increments(self.w.queue, pending, now) + ops.drain(self.w.queue)  # db/OpenAI sums
        wkey = keys.worker(self.w.name)
        # As RQ's worker counts them: every attempt that raised is a failed job, retried or not.
        ok = sum(1 for e in pending if e.outcome == "completed")
        failed = len(pending) - ok
        working = sum(e.seconds for e in pending)
        stats += [(wkey, "successful_job_count", "i", str(ok)), (wkey, "failed_job_count", "i", str(failed)),
                  (wkey, "total_working_time", "f", f"{working:.6f}")]
        return pending, stats

    def _decide(self, job: ClaimedJob, result: Result) -> Completion:
        """The job's outcome; a job the rules cannot be applied to is refused, alone."""
        try:
            return decide(job, result, self.w.qs, self.w.name)
        except Exception as exc:
            log.exception("job %s: outcome could not be decided", codec.printable(job.id))
            return refusal(job, f"refused: the job hash cannot be processed ({exc!r})", self.w.name)

    def _prepare(self, batch: list[Item], flush_stats: bool, token: str | None) -> Prepared:
        """The batch's outcomes and metrics, decided once per token: a try of the same batch
        again sends the same arguments, so its metrics are neither lost nor counted twice."""
        if token is not None and self._prepared is not None and self._prepared[0] == token:
            return self._prepared[1]
        completions = [self._decide(job, result) for job, result in batch]
        now = time.time()
        pending, stats = self._stats(completions, now, flush_stats)
        prepared = (completions, now, pending, stats)
        if token is not None:
            self._prepared = (token, prepared)
        return prepared

    def _write(self, batch: list[Item], flush_stats: bool = False, token: str | None = None) -> None:
        w = self.w
        completions, now, pending, stats = self._prepare(batch, flush_stats, token)
        args: list[Any] = [w.queue, w.name, f"{now:.6f}", codec.rq_now(), w.qs.keep_finished,
                           w.qs.keep_failed, TRIM_GRACE, len(completions), len(stats), token or os.urandom(8).hex()]
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
                if script_error(exc):
                    self._write_alone(batch, exc, flush_stats)
                    return
                errors += 1
                if w.hard.is_set():
                    return
                w.wait_for_redis(exc, errors)
                if w.stopping.is_set() and errors > 50:
                    return  # give up: the jobs stay started and are recovered as abandoned
        if errors:
            w.redis_back(errors)
        if stats:
            self._pending_stats = []
            self._stats_due = now + STATS_EVERY
        else:
            self._pending_stats = pending
        try:  # written: what follows must not make the batch be written again
            self._record(batch, completions, applied)
            joblog.ended(w.queue, w.name, batch, completions, applied)  # attempt end, logged once
            parents = [(job.id, c.label if c.label in ("finished", "stopped") else "failed")
                       for (job, _), c, flag in zip(batch, completions, applied, strict=False) if int(flag) == 2]
            if parents:
                enqueue_dependents(w.conn, parents, w.queue)
        except Exception:
            log.exception("after writing a batch of %d outcome(s)", len(batch))
        finally:
            self._forget(batch)

    def _write_alone(self, batch: list[Item], exc: Exception, flush_stats: bool) -> None:
        """The script failed on something in this batch: write each job on its own, so one job's
        data cannot hold back the others; a job that still fails is left to the orphan check."""
        if len(batch) > 1:
            for item in reversed(batch):  # so jobs put back at the front of the queue keep their order
                self._write([item], flush_stats)
            return
        job = batch[0][0]
        log.error("job %s: its outcome could not be written (%s)", codec.printable(job.id), exc)
        self._forget(batch)

    def _forget(self, batch: list[Item]) -> None:
        with self.w.lock:
            for job, _ in batch:
                self.w.inflight.pop(job.member, None)
                self.unwritten.discard(job.member)
            if self.w.stopping.is_set():  # what the lock's waiters wait for is the slots (QueueWorker._end_all)
                self.w.lock.notify_all()

    def _record(self, batch: list[Item], completions: list[Completion], applied: list[Any]) -> None:
        """Hand each applied attempt to the job history (stale ones were someone else's to write)."""
        if self.history is None:
            return
        from slimyq.history.recorder import RunRow

        for (job, result), c, flag in zip(batch, completions, applied, strict=False):
            if not int(flag) or c.rerun:  # a rerun keeps its attempt number: its row is the rerun's
                continue
            self.history.record(RunRow(
                job_id=codec.printable(job.id), queue=self.w.queue, job_type=result.job_type, attempt=c.attempt,
                state=c.label, user_id=result.user, enqueued=job.enqueued_at,
                started=result.started, ended=result.ended or result.started, duration_ms=result.duration * 1000,
                error_type=None if result.ok else result.error_type,
                error_message=None if result.ok else result.error, worker=self.w.name,
            ))
