"""Database jobs a claim at a time: one write transaction per claimed batch, a savepoint per job
(a claim is one batch, or on a far server database one batch per user: :mod:`slimyq.runtime.parts`).

The handlers' own ``write_transaction`` / ``once()`` blocks nest inside as savepoints (peewee's
``atomic()`` does that by itself), so a batch costs one ``BEGIN``/``COMMIT`` (on SQLite: one fsync
and one turn of the writer lock) instead of one per job. The rules:

* a job that fails rolls back its own savepoint only: its writes and its effect-once marker are
  gone, the other jobs of the batch are unaffected;
* outcomes are reported (handed to the completer, then Redis) only after the commit, so no job
  counts as done before its effects are durable; each transaction's outcomes at once, not at the
  end of the batch;
* a batch has a time budget (the worker's: ``min(1 s, timeout / 10)``): once it is spent, the jobs
  not started yet are handed to the queue's other threads one by one (so one slow job holds up
  no more than the jobs that ran before it in its transaction, and the queue's concurrency still
  means jobs at once) and the running transaction commits as soon as its current job ends;
* if the commit fails, no job of the batch is done: every job that succeeded gets a retry that
  does not use up an attempt (its effects and its effect-once marker were rolled back together,
  so the retry runs for real and exactly once);
* a timeout (or a stop) raised into the thread may land anywhere, inside peewee too: the batch's
  transaction is rolled back whole, the jobs that had succeeded in it are retried the same way,
  and the rest of the batch goes on in a new transaction;
* a deadlock (:mod:`slimyq.db.conflicts`) met by any statement of a job, caught by its handler or
  not, ends the transaction the same way: the database has rolled it back (MySQL) or holds the
  locks the other transaction waits for (PostgreSQL). The victim's job is a conflict, the jobs
  that had succeeded before it batch-mates; all run again at once (:mod:`slimyq.runtime.outcome`),
  reported in claim order so they go back to the front of the queue in that order.

Only jobs of the queue's own types declared ``batchable`` (``@job_type(..., batchable=True)``: the
database handlers) are batched: a chat job (its OpenAI call must not be repeated by a batch-mate's
rollback), the audit cleanup (many commits of its own), the canary (it sleeps) and a job whose type
is unknown run on their own threads as usual, so a batch is short database work.

Opening the transaction can fail (the database is down): the batch then runs job by job, as
without batching, so each job's failure is classified as usual.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slimyq.runtime import codec
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result

log = logging.getLogger("slimyq.worker")

Run = Callable[[ClaimedJob], Result | None]  # None: the job was not started (skipped)
Guard = Callable[[], contextlib.AbstractContextManager[Any]]  # bounds the commit like a job
Taken = Callable[[list[ClaimedJob]], list[ClaimedJob]]  # of these, the jobs another worker took over
Report = Callable[[list[tuple[ClaimedJob, Result]]], None]  # a transaction's outcomes, once it has ended


class _Undeferred:
    """The jobs of batches whose write of effect-once markers failed other than by an outage (a
    takeover's marker, or something a database refused that :class:`slimyq.jobs.effects.Deferred`
    did not foresee): in this process their markers are not deferred again, so a marker that
    cannot be stored fails its own job at once instead of rolling its batch-mates back again and
    again. Bounded: the oldest are forgotten first."""

    MOST = 10_000

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}
        self._lock = threading.Lock()

    def add(self, ids: set[str]) -> None:
        with self._lock:
            self._ids.update(dict.fromkeys(ids))
            while len(self._ids) > self.MOST:
                del self._ids[next(iter(self._ids))]

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._ids


_undeferred = _Undeferred()


class BatchAborted(Exception):
    """The batch's transaction is gone (a failed statement of our own, a commit that failed)."""


def rolled_back(result: Result, why: str, error_type: str = codec.BATCH_ROLLED_BACK) -> Result:
    """A job that succeeded in a batch whose transaction did not commit: retried, no attempt used
    (``database_unavailable`` only when the database itself failed the commit)."""
    return Result(ok=False, error_type=error_type, error=why, infra=True, job_type=result.job_type,
                  user=result.user, started=result.started, ended=result.ended or time.time())


def interrupted(result: Result) -> bool:
    """An exception was raised into the thread (timeout, stop): the transaction state is unknown.
    Judged by whether the watchdog fired, not by the error: a handler may catch it and fail otherwise."""
    return result.interrupted or result.error_type == "timeout" or result.stopped


def abandon(db: Any) -> None:
    """Roll back whatever this thread has open on ``db`` and forget peewee's transaction stack."""
    from slimyq.db.instrument import forget_lost
    from slimyq.db.savepoints import forget
    from slimyq.db.sqlite import release_thread_locks

    forget()
    forget_lost()
    state = db._state
    try:
        if state.conn is not None:
            db.rollback()
    except Exception as exc:  # the connection is unusable: the next job connects afresh
        log.debug("rolling back an abandoned batch: %s", exc)
        with contextlib.suppress(Exception):
            state.conn.close()
        with contextlib.suppress(Exception):
            state.reset()
    state.transactions.clear()
    try:
        release_thread_locks()
    except Exception as exc:
        log.debug("releasing the SQLite writer lock after a batch: %s", exc)


def claim_order(jobs: list[ClaimedJob]) -> Callable[[ClaimedJob], int]:
    """A sort key: a job's place in ``jobs`` (a job not in it goes last)."""
    position = {id(job): i for i, job in enumerate(jobs)}
    return lambda job: position.get(id(job), len(jobs))


def split(jobs: list[ClaimedJob], queue: str) -> tuple[list[ClaimedJob], list[ClaimedJob]]:
    """The jobs to run alone and the batch (empty unless at least two jobs share it): only jobs of
    the queue's own types declared ``batchable`` are batched. The type is read from the job's
    metadata for this choice only: the allowlist check comes later, in
    :func:`slimyq.runtime.execute.prepare`, for batched jobs too."""
    from slimyq.jobs import registry

    own = {jt.name for jt in registry.all_types() if jt.queue == queue and jt.batchable}
    batch: list[ClaimedJob] = []
    alone: list[ClaimedJob] = []
    for job in jobs:
        (batch if not job.problem and job.meta.get("type") in own else alone).append(job)
    if len(batch) < 2:
        return jobs, []
    return alone, batch


class Jobs:
    """A claimed batch's jobs not started yet. The batch's thread takes them one at a time; once
    the batch's time budget is spent, :meth:`take_rest` hands what is left to other threads."""

    def __init__(self, jobs: list[ClaimedJob]) -> None:
        self._jobs = collections.deque(jobs)
        self._lock = threading.Lock()

    def next(self) -> ClaimedJob | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def waiting(self) -> list[str]:
        """The ids of the jobs not started yet."""
        with self._lock:
            return [job.id for job in self._jobs]

    def take_rest(self) -> list[ClaimedJob]:
        with self._lock:
            rest = list(self._jobs)
            self._jobs.clear()
        return rest


def run_batch(db: Any, jobs: Jobs | list[ClaimedJob], run: Run, guard: Guard | None = None,
              taken: Taken | None = None, report: Report | None = None) -> list[tuple[ClaimedJob, Result]]:
    """Run ``jobs`` in this thread, in as few transactions as the rules allow. Each transaction's
    outcomes go to ``report`` as soon as it has ended (committed or rolled back); without
    ``report`` they are all returned at the end. Before each commit ``taken`` is asked which of
    the transaction's jobs another worker took over (this worker stalled past
    ``abandoned_after``): if any, the transaction is rolled back, so a job that runs again
    elsewhere never has its effect committed here too."""
    from slimyq.db import instrument
    from slimyq.db.savepoints import JobSavepoint, aborted
    from slimyq.jobs.base import write_transaction
    from slimyq.jobs.effects import Deferred

    queue = jobs if isinstance(jobs, Jobs) else Jobs(jobs)
    out: list[tuple[ClaimedJob, Result]] = []
    bounded: Guard = guard or contextlib.nullcontext  # the batch's own statements: lookup, write, commit

    def emit(outcomes: list[tuple[ClaimedJob, Result]]) -> None:
        if report is None:
            out.extend(outcomes)
        elif outcomes:
            report(outcomes)

    job = queue.next()
    while job is not None:
        ended: list[tuple[ClaimedJob, Result]] = []  # not committed: reported whatever the commit does
        pending: list[tuple[ClaimedJob, Result]] = []  # succeeded: done only once committed
        try:
            tx = write_transaction(db)
            tx.__enter__()
        except Exception as exc:
            log.debug("could not open a batch transaction (%s); running the rest job by job", exc)
            abandon(db)
            _one_by_one(job, queue, run, emit)
            return out
        unstarted: ClaimedJob | None = None
        ran: list[ClaimedJob] = []  # this transaction's jobs, in claim order
        conflicts = instrument.conflicts()
        try:
            try:  # (bounded like the commit: it may wait on a lock of job_effects)
                with bounded():
                    markers = Deferred(db, [i for i in (job.id, *queue.waiting())
                                            if codec.JOB_ID.match(i) and i not in _undeferred])
            except Exception as exc:  # no job has run: they go on job by job
                unstarted = job
                raise _Unusable(str(exc)) from exc
            with markers:
                while job is not None:
                    sp = JobSavepoint(db)
                    try:
                        sp.__enter__()
                    except Exception as exc:  # the job has not run: it goes on job by job
                        unstarted = job
                        raise _Unusable(str(exc)) from exc
                    markers.job()
                    ran.append(job)
                    result = run(job)
                    if result is None:
                        sp.rollback()
                        markers.job_failed()
                    elif interrupted(result):
                        ended.append((job, result))
                        raise BatchAborted(f"job {codec.printable(job.id)} of the batch was interrupted "
                                           f"({result.error_type})")
                    elif result.error_type == codec.CONFLICT_ERROR or instrument.conflicts() != conflicts:
                        # A deadlock's victim (or a job that caught the deadlock and went on): MySQL has
                        # rolled back the whole transaction already (its savepoints are gone, later
                        # statements would commit on their own); on PostgreSQL the batch's locks are what
                        # the other transaction waits for. Either way the batch ends here and runs again.
                        (pending if result.ok else ended).append((job, result))
                        raise BatchAborted(f"job {codec.printable(job.id)} of the batch met a deadlock")
                    elif result.ok:
                        pending.append((job, result))
                        sp.keep()
                        if aborted(db):  # its commit would silently roll back the whole batch
                            raise BatchAborted(f"job {codec.printable(job.id)} of the batch left the transaction "
                                               "aborted (a database error it caught without a savepoint of its own)")
                    else:
                        ended.append((job, result))
                        sp.rollback()
                        markers.job_failed()
                    job = queue.next()
            with bounded():
                try:
                    markers.flush()  # another run's marker since the lookup fails it: all run again
                except Exception as exc:
                    from slimyq.runtime.execute import database_unavailable

                    if not database_unavailable(exc):  # whatever it was, not again for these jobs
                        _undeferred.add(markers.ids)
                    raise
            lost = taken([j for j, _ in pending]) if taken is not None and pending else []
            if lost:
                raise BatchAborted(f"{len(lost)} job(s) of the batch were taken over by another worker")
            with bounded():
                tx.__exit__(None, None, None)
        except Exception as exc:
            # Not committed: nothing that succeeded in this transaction happened.
            abandon(db)
            why = f"the batch's transaction was rolled back ({exc}); run again"
            log.warning("a database batch of %d job(s) was rolled back: %s", len(pending), exc)
            from slimyq.runtime.execute import database_unavailable

            kind = codec.INFRA_ERROR if database_unavailable(exc) else codec.BATCH_ROLLED_BACK
            outcomes = ended + [(j, rolled_back(r, why, kind)) for j, r in pending]
            # In claim order: the jobs run again from the front of the queue in the order they came.
            position = claim_order(ran)
            outcomes.sort(key=lambda outcome: position(outcome[0]))
            emit(outcomes)
            if unstarted is not None:
                _one_by_one(unstarted, queue, run, emit)
                return out
            job = queue.next()
            continue
        emit(ended + pending)
    return out


class _Unusable(BatchAborted):
    """A statement of the batch's own (the markers' lookup, a savepoint) failed before its job ran:
    the connection is not usable for batching."""


def _one_by_one(first: ClaimedJob, queue: Jobs, run: Run, emit: Callable[[list[tuple[ClaimedJob, Result]]], None]
                ) -> None:
    job: ClaimedJob | None = first
    while job is not None:
        result = run(job)
        if result is not None:
            emit([(job, result)])
        job = queue.next()
