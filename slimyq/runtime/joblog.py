"""The log lines of job attempts (``job.start``, ``job.end``) and of the worker's life, from one place.

Fields: ``job_id``, ``job_type``, ``queue``, ``attempt``, ``worker``, ``request_id`` (the payload's
``requestId`` where its model has one), and at the end ``duration_ms``, ``outcome`` (finished,
retried, failed, refused, timed_out, stopped), ``error_type`` and ``error`` (one line, at most
300 characters, URL passwords and the API key redacted). Never payload content: the payload only
gives its request id. The end is logged once the outcome is written (an attempt whose outcome
went stale, recovered by another worker meanwhile, is logged by nobody twice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from slimyq.logs import event
from slimyq.payloads.common import field_value
from slimyq.runtime import codec

if TYPE_CHECKING:
    from slimyq.runtime.codec import ClaimedJob
    from slimyq.runtime.execute import Result
    from slimyq.runtime.outcome import Completion

log = logging.getLogger("slimyq.job")
life = logging.getLogger("slimyq.worker")
ERROR_CHARS = 300
_worker = ""  # this process's worker name (one QueueWorker per process; set by :func:`bind`)
_secrets: tuple[str, ...] = ()
_LEVELS = {"finished": logging.INFO, "retried": logging.WARNING, "stopped": logging.WARNING}


def bind(worker: str, queue: str, concurrency: int, secrets: Sequence[str] = ()) -> None:
    """Name the worker of this process in its job lines, and log its start."""
    global _worker, _secrets
    _worker = worker
    _secrets = tuple(s for s in secrets if s)
    import os

    event(life, logging.INFO, "worker.start", f"worker {worker} serving {queue} x{concurrency}",
          worker=worker, queue=queue, concurrency=concurrency, pid=os.getpid())


def request_id(payload: Any) -> str | None:
    rid = field_value(payload, "request_id")
    return None if rid is None else str(rid)


def one_line(text: str) -> str:
    from slimyq.redact import redact_text

    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = redact_text(first, _secrets)
    return first if len(first) <= ERROR_CHARS else first[: ERROR_CHARS - 1] + "…"


def started(job: ClaimedJob, queue: str, result: Result) -> None:
    """The attempt passed the allowlist and validation and its handler is about to run."""
    if not log.isEnabledFor(logging.INFO):
        return
    event(log, logging.INFO, "job.start", f"job {codec.printable(job.id)} started",
          job_id=codec.printable(job.id), job_type=result.job_type, queue=queue, attempt=job.attempt,
          worker=_worker or None, request_id=result.request_id)


def outcome_of(completion: Completion, result: Result) -> str:
    label = completion.label
    if result.error_type == "timeout" and label in ("failed", "retried"):
        return "timed_out"
    return label


def ended(queue: str, worker: str, batch: Sequence[tuple[ClaimedJob, Result]], completions: Sequence[Completion],
          applied: Sequence[Any]) -> None:
    """One ``job.end`` line per attempt whose outcome the completion script applied, at its
    outcome's level (``--log-level warning`` keeps the retries and failures)."""
    if not log.isEnabledFor(logging.WARNING):
        return
    for (job, result), c, flag in zip(batch, completions, applied, strict=False):
        if not int(flag):
            continue
        outcome = outcome_of(c, result)
        level = _LEVELS.get(outcome, logging.ERROR)
        if outcome == "timed_out" and c.label == "retried":
            level = logging.WARNING
        if not log.isEnabledFor(level):
            continue
        fields: dict[str, Any] = {
            "job_id": codec.printable(job.id), "job_type": result.job_type, "queue": queue, "attempt": c.attempt,
            "worker": worker, "request_id": result.request_id, "duration_ms": round(result.duration * 1000, 3),
            "outcome": outcome,
        }
        if not result.ok:
            fields["error_type"] = result.error_type
            fields["error"] = one_line(result.error)
            fields["retrying"] = c.label == "retried"
        event(log, level, "job.end", f"job {fields['job_id']} {outcome} in {fields['duration_ms']:g} ms", **fields)
