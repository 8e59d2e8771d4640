"""From a job's :class:`Result` to what the completion script writes: finished, retried or failed.

Retry rules follow RQ's (``retries_left`` and ``retry_intervals`` on the job hash); jobs that came
from a plain RQ client without them get the queue's configured attempts and backoff. Permanent
errors (validation, ownership, refused jobs) fail at once.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from slimyq.config import QueueSettings
from slimyq.runtime import codec
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result
from slimyq.runtime.metrics import Ended
from slimyq.stamps import iso_ms, rq_time


@dataclass(frozen=True)
class Completion:
    args: list[Any]  # the 12 per-job values of the COMPLETE script
    ended: Ended
    label: str  # finished | failed | retried | refused | stopped: the attempt's outcome, as recorded
    attempt: int  # the attempt's number (1 for the first run)
    rerun: bool = False  # retried without using up an attempt: the same attempt runs again (no history row)
    counted: bool = True  # an attempt of its own in the metrics (not a batch-mate's rollback)


def attempt_record(attempt: int, result: Result, outcome: str, worker: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "attempt": attempt,
        "startedAt": iso_ms(result.started),
        "endedAt": iso_ms(result.ended or result.started),
        "durationMs": round(result.duration * 1000, 3),
        "outcome": outcome,
        "worker": worker,
    }
    if not result.ok:
        record["errorType"] = result.error_type
        record["error"] = result.error[:2000]
    return record


INFRA_DELAY = 5.0  # seconds before a job that met an unreachable database runs again
INFRA_RETRIES = 120  # ...for at most this many tries (10 minutes), then the normal rules apply (with conflicts)


def decide(job: ClaimedJob, result: Result, qs: QueueSettings, worker: str) -> Completion:
    attempt = job.attempt
    retries_left = job.retries_left(qs.attempts - 1)
    delay = 0.0
    earlier = job.attempts
    infra_tries = sum(_tries(a) for a in earlier if a.get("errorType") in codec.RERUN_ERRORS)
    infra = result.infra and not result.ok and infra_tries < INFRA_RETRIES
    if infra:
        # Not the job's fault: run it again later without using up one of its attempts.
        outcome, kind = "retry", "retried"
        ttl = job.failure_ttl()
        payload = ""
        if result.error_type == codec.INFRA_ERROR:
            delay = max(INFRA_DELAY, codec.retry_delay(job.retry_intervals(qs.retry_delays()), retries_left))
        else:
            delay = rerun_delay(_tries(earlier[-1]) if earlier and "tries" in earlier[-1] else 0)
    elif result.ok:
        outcome, kind = "ok", "completed"
        ttl = job.result_ttl()
        payload = codec.encode_return_value(result.value)
    elif result.stopped:
        # RQ's stop-job command: status ``stopped``, in the failed registry, never retried.
        outcome, kind = "stopped", "failed"
        ttl = job.failure_ttl()
        payload = codec.encode_exc_string(result.error)
    elif result.permanent or retries_left <= 0:
        outcome, kind = "fail", "failed"
        ttl = job.failure_ttl()
        payload = codec.encode_exc_string(result.traceback or result.error)
    else:
        outcome, kind = "retry", "retried"
        ttl = job.failure_ttl()
        payload = ""
        delay = codec.retry_delay(job.retry_intervals(qs.retry_delays()), retries_left)
        if result.retry_after:
            delay = max(delay, float(result.retry_after))
        retries_left -= 1
    label = {"ok": "finished", "fail": "failed", "retry": "retried", "stopped": "stopped"}[outcome]
    if outcome == "fail" and result.error_type == "refused":
        label = "refused"
    record = attempt_record(attempt, result, label, worker)
    if infra:
        # Retries for an unreachable database share one record (with a count), so a long outage
        # does not grow the hash by a record per try or make the attempt numbers mislead.
        if earlier and "tries" in earlier[-1]:
            record["startedAt"] = earlier[-1].get("startedAt", record["startedAt"])
            record["tries"] = _tries(earlier[-1]) + 1
            earlier = earlier[:-1]
        else:
            record["tries"] = 1
    attempts = [*earlier, record]
    args = [
        job.key_id,
        job.execution_id,
        outcome,
        ttl,
        payload,
        codec.compact(attempts),
        f"{delay:.3f}",
        max(retries_left, 0),
        f"{result.started:.6f}",
        f"{(result.ended or result.started):.6f}",
        rq_time(result.started),
        rq_time(result.ended or result.started),
    ]
    return Completion(args, Ended(result.job_type, kind, result.duration), label, attempt, rerun=infra,
                      counted=not (infra and result.error_type == codec.BATCH_ROLLED_BACK))


RERUN_FIRST_BACKOFF = 0.05  # seconds before the second run of a rolled-back job; doubled each time
RERUN_MAX_BACKOFF = 1.0


def rerun_delay(tries: int) -> float:
    """Seconds before a job rolled back by the database (a deadlock's victim, a batch-mate of one, of
    a timeout, of a failed commit) runs again, after ``tries`` such runs in a row: none the first
    time (the front of the queue: the transaction it met has gone on, the database is fine), then
    50 ms doubling up to 1 s, with jitter, so two workers that keep meeting each other fall out of
    step instead of burning the rerun cap in a second."""
    if tries <= 0:
        return 0.0
    top = min(RERUN_MAX_BACKOFF, RERUN_FIRST_BACKOFF * 2.0 ** min(tries - 1, 16))
    return top * random.uniform(0.5, 1.0)


def _tries(record: dict[str, Any]) -> int:
    tries = record.get("tries", 1)
    return tries if isinstance(tries, int) and tries > 0 else 1


def refusal(job: ClaimedJob, reason: str, worker: str) -> Completion:
    """Fail the job as refused, reading nothing from its hash (the last resort for odd data)."""
    now = time.time()
    clean = ClaimedJob(job.id, job.execution_id, {})
    result = Result(ok=False, error_type="refused", error=reason, permanent=True, started=now, ended=now)
    return decide(clean, result, QueueSettings(concurrency=1, timeout=1, attempts=1), worker)
