"""How long a worker's jobs take, overall and by type, and which jobs of a claim run in a row.

Both averages are exponential moving averages (each job weighs 1/16), taken as long (1 s) until
measured. The overall one decides whether a claim waits a moment for more free slots (``GATHER``
in :mod:`slimyq.runtime.worker`); the one by type decides how a claim's jobs reach the job threads.

A job normally gets a job thread of its own. Jobs of types that took under :data:`SHORT` on
average here run one after another on one thread instead (:class:`InARow`), as many as fit in
:data:`ROW_BUDGET` by their types' averages: handing a job to a sleeping thread costs a wake-up and
a hand-over of the GIL, more than such a job itself (trivial jobs at concurrency 10, measured on the
benchmark's 2-core VM: about 20% more jobs per second in rows). The budget bounds what a row costs
the jobs at its end, a job that waits on a round trip included (it waits in turn, not beside the
others). Each job of a row holds its slot until the row ends, and its outcome is handed over with
the row's (as a batch's are after its commit: one hand-over instead of one per job); a stop, a
stop-job, a takeover or a timeout applies to each job as it would on a thread of its own. The cost,
as for the jobs of a database batch: a job of a short type that turns out slow (a lock wait) delays
the ones after it in its row, and the report of the ones before it, up to its timeout; the claim's
other jobs are not held up. Batches
(``batch_transaction``) and ``--fork`` keep their own rules, and jobs whose type is not known (a
plain RQ client's) always run alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import UNKNOWN_TYPE, Result, job_type_of

ROW_BUDGET = 0.001  # seconds: a row holds jobs whose averages add up to at most this...
SHORT = ROW_BUDGET / 2  # ...of types faster than this on average (two of them at least fit)
UNMEASURED = 1.0  # what a type or the worker is taken to need before any job of it ended
WEIGHT = 1 / 16  # of each job in the averages
MAX_TYPES = 1024  # averages kept by type


@dataclass(frozen=True)
class InARow:
    """Jobs of a claim that one job thread runs one after the other, in claim order."""

    jobs: list[ClaimedJob]


class Durations:
    """The averages; :meth:`ended` is called under the worker's lock, the rest read without it."""

    def __init__(self) -> None:
        self.overall = UNMEASURED
        self._by_type: dict[str, float] = {}

    def ended(self, job_type: str, result: Result) -> None:
        """A job's attempt ended; one stopped or refused before it ran says nothing of its type."""
        seconds = result.duration
        self.overall += (seconds - self.overall) * WEIGHT
        if job_type == UNKNOWN_TYPE or result.stopped or result.error_type in ("stopped", "refused"):
            return
        mean = self._by_type.get(job_type, UNMEASURED)
        if job_type not in self._by_type and len(self._by_type) >= MAX_TYPES:
            self._by_type.clear()  # types named in jobs' meta by a client gone wild: start over
        self._by_type[job_type] = mean + (seconds - mean) * WEIGHT

    def of(self, job_type: str) -> float:
        return UNMEASURED if job_type == UNKNOWN_TYPE else self._by_type.get(job_type, UNMEASURED)

    def arrange(self, jobs: list[ClaimedJob]) -> list[ClaimedJob | InARow]:
        """``jobs`` as the job threads take them, in claim order: each alone, but those of short
        types in rows of two or more (a row where its first job was), each within :data:`ROW_BUDGET`."""
        items: list[ClaimedJob | list[ClaimedJob]] = []
        row: list[ClaimedJob] = []
        spent = 0.0
        for job in jobs:
            mean = self.of(job_type_of(job))
            if mean >= SHORT:
                items.append(job)
                continue
            if not row or spent + mean > ROW_BUDGET:
                row, spent = [], 0.0
                items.append(row)
            row.append(job)
            spent += mean
        return [item if not isinstance(item, list) else InARow(item) if len(item) > 1 else item[0] for item in items]
