"""A queue worker's database batches: which of a claim's jobs form them, and running them on the
worker's job threads (the rules of a batch are :mod:`slimyq.runtime.batch`'s; how a claim is split
when the database is far away, :mod:`slimyq.runtime.parts`')."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from slimyq.runtime import execute
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import JobTimeout, Result
from slimyq.runtime.parts import Splitter, at_once

if TYPE_CHECKING:
    from slimyq.runtime.worker import QueueWorker

log = logging.getLogger("slimyq.worker")

BATCH_BUDGET = 1.0  # seconds a database batch may take (or a tenth of the queue's timeout, if less)


class BatchRunner:
    def __init__(self, worker: QueueWorker) -> None:
        self.w = worker
        self.splitter = Splitter(at_once(worker.qs.batch_transaction and not worker.fork, worker.concurrency,
                                         worker.settings.effective_database_url, worker.queue))

    def dispatch(self, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        """Put a claim's batches on the job threads' queue; returns the jobs that run alone (a job
        alone in its part runs as without batching: its own transaction, no savepoint)."""
        from slimyq.runtime.batch import split
        from slimyq.runtime.parts import parts

        alone, batch = split(jobs, self.w.queue)
        for part in parts(batch, self.splitter.now):
            if len(part) == 1:
                alone.append(part[0])
            else:
                self.w._todo.put(part)
        return alone

    def measure(self) -> None:
        """The splitter's probe, when due, between two jobs: not while stopping, and bounded by the
        queue's timeout like a job (a probe stuck past it restarts the process)."""
        w = self.w
        if not self.splitter.due() or w.stop_requested_at is not None or w.stopping.is_set():
            return
        timeout = float(w.qs.timeout)
        token = w.watchdog.watch(timeout, lambda: w.restart(
            f"timing the database's round trip ran past {timeout:g} s and its thread does not stop"))
        try:
            self.splitter.measure(w.db.opened)
        except JobTimeout:
            log.warning("timing the database's round trip exceeded %g s", timeout)
        finally:
            w.watchdog.release(token)

    def execute(self, jobs: list[ClaimedJob]) -> None:
        """Run a claimed batch in as few database transactions as allowed (see
        :mod:`slimyq.runtime.batch`); each transaction's outcomes are handed over once it has
        ended. Past the batch's time budget its jobs not started yet go to the other threads."""
        from slimyq.runtime.batch import Jobs, abandon, rolled_back, run_batch

        w = self.w
        batch = Jobs(jobs)
        ran: set[str] = set()  # run here and not reported yet

        def run(job: ClaimedJob) -> Result | None:
            if not w._begin(job):
                return None
            result = w._attempt(job)
            with w.lock:  # ran: no longer stoppable, not done until the commit
                w._running.pop(job.member, None)
                w._uncommitted.add(job.member)
                ran.add(job.member)
            return result

        def report(outcomes: list[tuple[ClaimedJob, Result]]) -> None:
            for job, _ in outcomes:
                ran.discard(job.member)
            w._end_all(outcomes)

        try:
            db = w.database()
        except Exception as exc:  # the jobs meet the same failure one by one, classified as usual
            log.debug("database not available for a batch: %s", exc)
            self._give_back(batch.take_rest())
            return
        alarm = w.watchdog.alarm(min(BATCH_BUDGET, w.qs.timeout / 10), lambda: self._give_back(batch.take_rest()))
        try:
            run_batch(db, batch, run, self._own_statements_guard, self._taken_of, report)
        except Exception as exc:  # a bug, not a job's failure: nothing of the batch is done
            log.exception("a database batch failed; its jobs are retried")
            abandon(db)
            self._give_back(batch.take_rest())  # not started: they run on their own
            why = f"worker error in a database batch: {exc!r}"
            report([(job, rolled_back(Result(ok=False, job_type=execute.job_type_of(job)), why))
                    for job in jobs if job.member in ran])
        finally:
            w.watchdog.cancel(alarm)

    def _give_back(self, jobs: list[ClaimedJob]) -> None:
        """Jobs of a batch that were not started: each goes to the next free thread on its own."""
        for job in jobs:
            self.w._todo.put(job)

    def _taken_of(self, jobs: list[ClaimedJob]) -> list[ClaimedJob]:
        """The batch's jobs another worker took over (asked before the commit: theirs must not be)."""
        with self.w.lock:
            return [job for job in jobs if job.member in self.w._taken]

    @contextlib.contextmanager
    def _own_statements_guard(self) -> Iterator[None]:
        """A batch's own statements (its effect-once markers' lookup and write, its commit) are
        bounded by the queue's timeout, like a job."""
        w = self.w
        timeout = float(w.qs.timeout)
        token = w.watchdog.watch(timeout, lambda: w.restart(
            f"a database batch's own statements (its markers' lookup or write, its commit) ran past {timeout:g} s "
            "and its thread does not stop (its jobs are "
            "retried once this process is gone)"))
        try:
            yield
        except JobTimeout as exc:
            raise RuntimeError(f"the batch's own statements (markers, commit) exceeded {timeout:g} s") from exc
        finally:
            if w.watchdog.release(token):
                from slimyq.db.sqlite import release_thread_locks

                release_thread_locks()
