"""A batchable job type that can be made slow (named by the ``jobs`` setting in the batch tests):
it writes a row with its effect-once marker, then works ``seconds`` inside its transaction."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from slimyq import JobContext, Payload, job_type


class SlowWrite(Payload):
    key: str = Field(min_length=1, max_length=64)
    seconds: float = Field(default=0.0, ge=0)
    swallow: bool = False  # catch whatever is raised into the work (a timeout) and fail otherwise


@job_type("slow_write", queue="database", payload=SlowWrite, batchable=True,
          help="Write an audit row once, then keep working for `seconds` in the same transaction.")
def slow_write(p: SlowWrite, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import AuditLog, utcnow
    from slimyq.jobs.effects import once

    row_id = ctx.derived_id("slow_write")

    def apply() -> dict[str, Any]:
        AuditLog.insert(id=row_id, user_id="u1", action="slow_write", resource_type="test", resource_id=p.key,
                        details={}, timestamp=utcnow(), success=True).execute()
        deadline = time.monotonic() + p.seconds
        try:
            while time.monotonic() < deadline:  # Python code: a timeout raised into the thread lands here
                time.sleep(0.01)
        except BaseException as exc:
            if not p.swallow:
                raise
            raise ValueError(f"the work ended early ({type(exc).__name__})") from None
        return {"key": p.key}

    return once(ctx, "slow_write", apply)
