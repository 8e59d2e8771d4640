"""The canary: proves a queue works end to end. Sleeps, fails its first N attempts, writes nothing."""

from __future__ import annotations

import time

from slimyq.jobs.base import JobContext
from slimyq.jobs.registry import ANY_QUEUE, job_type
from slimyq.payloads.canary import Canary


class CanaryFailure(Exception):
    error_type = "canary_failure"


@job_type("canary", queue=ANY_QUEUE, payload=Canary,
          help="Sleep, fail the first N attempts, then succeed: proves a queue works.")
def canary(p: Canary, ctx: JobContext) -> dict[str, object]:
    deadline = time.monotonic() + p.sleep_seconds
    # Sleep in short steps so a timeout (an exception raised in this thread) lands promptly.
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
    if ctx.attempt <= p.fail_times:
        raise CanaryFailure(f"canary failure (attempt {ctx.attempt})")
    return {"success": True, "attempt": ctx.attempt}
