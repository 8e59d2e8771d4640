"""Running one claimed job: allowlist, validation, the handler, and the classification of errors.

The allowlist check happens on the function *name* in the job hash, before anything is imported:
a job naming ``os.system`` (or anything outside the registry) is refused and never runs.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slimyq.db import instrument
from slimyq.db.conflicts import conflict
from slimyq.jobs import registry
from slimyq.jobs.base import Interrupted, JobContext, PermanentError, Refused
from slimyq.jobs.calls import check_call
from slimyq.obs import trace
from slimyq.payloads.common import payload_user
from slimyq.runtime import joblog
from slimyq.runtime.codec import CONFLICT_ERROR, INFRA_ERROR, MAX_JOB_SIZE, ClaimedJob, UndecodableJob


class JobTimeout(Interrupted):
    """Raised inside a job's thread (or reported for its forked child) when it runs too long."""

    error_type = "timeout"


class JobStopped(JobTimeout):
    """Raised inside a job's thread when RQ's stop-job command names it (handled like a timeout
    that ends the job as ``stopped``, never retried)."""


UNKNOWN_TYPE = "unknown"  # the job type of a job whose meta names none (and of a result not yet known)


@dataclass
class Result:
    ok: bool
    value: Any = None
    error_type: str = ""
    error: str = ""
    traceback: str = ""
    permanent: bool = False
    infra: bool = False  # the database was unreachable or chose this job as a deadlock's victim: no attempt used up
    stopped: bool = False  # stopped on request (RQ's stop-job command): never retried
    interrupted: bool = False  # the watchdog raised into the thread (a timeout, a stop), whatever it then raised
    retry_after: float | None = None
    job_type: str = UNKNOWN_TYPE
    user: str | None = None
    request_id: str | None = None  # the payload's requestId, for the job's log lines
    started: float = field(default_factory=time.time)
    ended: float = 0.0

    @property
    def duration(self) -> float:
        return max(self.ended - self.started, 0.0)


@dataclass(frozen=True)
class Prepared:
    """A job that passed the allowlist and validation, ready to call."""

    job_type: registry.JobType
    payload: Any
    handler: Callable[[Any, JobContext], Any]
    user: str | None


def prepare(job: ClaimedJob, queue: str, max_size: int = MAX_JOB_SIZE) -> Prepared:
    """Allowlist and validate; raises a :class:`PermanentError` for anything that must not run."""
    if job.problem:
        raise Refused(job.problem)
    try:
        func_name, instance, args, kwargs = job.call(max_size)
    except UndecodableJob as exc:
        raise Refused(str(exc)) from None
    job_type, payload = check_call(func_name, instance, args, kwargs, queue)
    return Prepared(job_type, payload, job_type.handler(), payload_user(payload))


def run(job: ClaimedJob, queue: str, make_context: Callable[[ClaimedJob], JobContext],
        max_size: int = MAX_JOB_SIZE) -> Result:
    """Run the job in this thread and describe what happened. Never raises (but JobTimeout)."""
    result = Result(ok=False, job_type=job_type_of(job), user=user_of(job))
    span = trace.attempt_start(job, queue) if trace.enabled else None  # the attempt's span
    instrument.forget_lost()  # a refused transaction is never a later job's
    lost, conflicts = instrument.lost_commits(), instrument.conflicts()
    try:
        prepared = prepare(job, queue, max_size)
        result.job_type = prepared.job_type.name
        result.user = prepared.user
        result.request_id = joblog.request_id(prepared.payload)  # attempt start, logged once
        joblog.started(job, queue, result)
        ctx = make_context(job)
        ctx.rerunnable = prepared.job_type.batchable
        value = prepared.handler(prepared.payload, ctx)
        if instrument.lost_commits() != lost:
            # It caught a deadlock (or another database error) and went on, and committed a
            # transaction the database had rolled back: what it reports done did not all happen.
            # A deadlock's: run again at once; any other error's: the handler's bug, retried by the
            # usual rules. (A handler that rolled back to a savepoint, or retried its transaction,
            # committed for real: it is done.)
            if instrument.conflicts() != conflicts:
                _fill(result, _LostTransaction("a database deadlock"), CONFLICT_ERROR, permanent=False)
                result.infra = True
            else:
                _fill(result, _LostTransaction("a database error"), "transaction_lost", permanent=False)
        else:
            result.ok, result.value = True, value
    except JobTimeout as exc:
        _fill(result, exc, "timeout", permanent=False)
    except PermanentError as exc:
        _fill(result, exc, exc.error_type, permanent=True)
    except Exception as exc:
        if conflict(exc):
            _fill(result, exc, CONFLICT_ERROR, permanent=False)
            result.infra = True
        elif database_unavailable(exc):
            _fill(result, exc, INFRA_ERROR, permanent=False)
            result.infra = True
        else:
            _fill(result, exc, getattr(exc, "error_type", type(exc).__name__), permanent=False)
    result.ended = time.time()
    if span is not None:
        trace.attempt_end(span, result)
    return result


class _LostTransaction(Exception):
    def __str__(self) -> str:
        return (f"the job caught {self.args[0]} and went on, but the database had rolled its transaction back "
                "(on PostgreSQL a failed statement does, unless rolled back to a savepoint): what it wrote did not "
                "happen")


def job_type_of(job: ClaimedJob) -> str:
    return str(job.meta.get("type", UNKNOWN_TYPE))


def user_of(job: ClaimedJob) -> str | None:
    user = job.meta.get("user")
    return None if user is None else str(user)


def database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (or SQLite stayed locked).

    Such a failure says nothing about the job: it is retried without using up an attempt, so a
    database restart of a few seconds does not turn a queue's jobs into failures.
    """
    from slimyq.errors import Unreachable

    if isinstance(exc, Unreachable):
        return True
    if conflict(exc):
        return False
    cls = type(exc)
    if not (cls.__module__.startswith("peewee") and cls.__name__ in {"OperationalError", "InterfaceError"}):
        return False
    # SQLite (and MySQL) report a code or schema bug as OperationalError too: such a job fails by
    # the normal rules instead of ten minutes of infrastructure retries.
    return not SCHEMA_ERRORS.search(str(exc))


SCHEMA_ERRORS = re.compile(r"no such (table|column|function)|has no column|syntax error|unknown column|"
                           r"already exists|datatype mismatch", re.IGNORECASE)


def _fill(result: Result, exc: BaseException, error_type: str, *, permanent: bool) -> None:
    result.error_type = error_type
    result.error = str(exc) or type(exc).__name__
    result.traceback = "".join(traceback.format_exception(exc))
    result.permanent = permanent
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        result.retry_after = float(retry_after)
