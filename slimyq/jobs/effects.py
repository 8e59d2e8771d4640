"""Effect-once for handlers that write: a marker row per job id, in the same transaction.

``once(ctx, "update_conversation", apply)`` runs ``apply`` (which writes and returns the job's
result) unless this job already did, in which case it returns the result of that first run and
writes nothing. The marker lives in its own table (``job_effects``), keyed by the job id: it is
not inferred from the current rows (a rename compared with the title now, a message that may
have been deleted since) and not a row that maintenance deletes (audit entries, job history).

``apply`` and the marker commit together or not at all: a run that fails leaves no marker, so its
retry runs for real. Two runs of one job at once (which the runtime never starts) could not both
commit: the marker's primary key refuses the second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from slimyq.db.models import JobEffect, utcnow
from slimyq.jobs.base import JobContext, write_transaction

R = TypeVar("R")


def once(ctx: JobContext, effect: str, apply: Callable[[], R]) -> R:
    with write_transaction(ctx.db):
        done: JobEffect | None = JobEffect.get_or_none(
            (JobEffect.job_id == ctx.job_id) & (JobEffect.effect == effect)
        )
        if done is not None:
            first: R = done.result
            return first
        result = apply()
        JobEffect.insert(job_id=ctx.job_id, effect=effect, result=result, created_at=utcnow()).execute()
    return result


def applied(job_id: str, effect: str) -> Any:
    """The first result of ``job_id``'s ``effect``, or None if it has not happened (for tests and
    inspection)."""
    row: JobEffect | None = JobEffect.get_or_none((JobEffect.job_id == job_id) & (JobEffect.effect == effect))
    return row.result if row is not None else None
