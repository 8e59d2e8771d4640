"""How long a worker's jobs take, overall and by type, and which jobs of a claim run in a row.

Both averages are exponential moving averages (each job weighs 1/16), taken as long (1 s) until
measured. The overall one decides whether a claim waits a moment for more free slots (``GATHER``
in :mod:`slimyq.runtime.worker`); the one by type decides how a claim's jobs reach the job threads.

A job normally gets a job thread of its own. Jobs of types that took under :data:`SHORT` on
average here run one after another on one thread instead (:class:`InARow`): handing a job to a
sleeping thread costs a wake-up and a hand-over of the GIL, more than such a job itself (trivial
jobs at concurrency 10, measured on the benchmark's 2-core VM: about 20% more jobs per second in a
row). The slots stay as they were: each job of a row holds one until it ends, and a stop, a
stop-job, a takeover or a timeout applies to each job as it would on a thread of its own. The cost,
as for the jobs of a database batch: a job of a short type that turns out slow (a lock wait) delays
the ones after it in its row, up to its timeout; the claim's other jobs are not held up.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import job_type_of

SHORT = 0.002  # seconds: types faster than this on average run in a row
UNMEASURED = 1.0  # what a type or the worker is taken to need before any job of it ended
WEIGHT = 1 / 16  # of each job in the averages


@dataclass(frozen=True)
class InARow:
    """Jobs of a claim that one job thread runs one after the other, in claim order."""

    jobs: list[ClaimedJob]


class Durations:
    """The averages; :meth:`ended` is called under the worker's lock, the rest read without it."""

    def __init__(self) -> None:
        self.overall = UNMEASURED
        self._by_type: dict[str, float] = {}

    def ended(self, job_type: str, seconds: float) -> None:
        self.overall += (seconds - self.overall) * WEIGHT
        mean = self._by_type.get(job_type, UNMEASURED)
        self._by_type[job_type] = mean + (seconds - mean) * WEIGHT

    def of(self, job_type: str) -> float:
        return self._by_type.get(job_type, UNMEASURED)

    def arrange(self, jobs: list[ClaimedJob]) -> list[ClaimedJob | InARow]:
        """``jobs`` as the job threads take them: each alone, but those of short types in a row
        (when there are two or more)."""
        short = [job for job in jobs if self.of(job_type_of(job)) < SHORT]
        if len(short) < 2:
            return list(jobs)
        quick = {id(job) for job in short}
        return [*(job for job in jobs if id(job) not in quick), InARow(short)]
