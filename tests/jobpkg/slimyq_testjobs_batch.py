"""Job types of the tests (named by the ``jobs`` setting): ``slow_write``, batchable, writes a row
with its effect-once marker, then works ``seconds`` inside its transaction; ``swallow_conflict``
meets a deadlock on its first run, catches it and returns as if fine (PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
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


class SwallowConflict(Payload):
    key: str = Field(min_length=1, max_length=64)
    marker: str = Field(min_length=1)  # a file: absent on the first run, which creates it
    savepoint: bool = False  # meet it in a savepoint of its own (rolled back: the transaction recovers)
    error: str = "deadlock"  # or "other": a division by zero


@job_type("swallow_conflict", queue="database", payload=SwallowConflict,
          help="Write an audit row; on the first run also meet a deadlock (40P01) and catch it.")
def swallow_conflict(p: SwallowConflict, ctx: JobContext) -> dict[str, Any]:
    import peewee

    from slimyq.db.models import AuditLog, utcnow
    from slimyq.jobs.base import write_transaction

    first = not os.path.exists(p.marker)
    db = ctx.db
    with write_transaction(db):
        AuditLog.insert(id=ctx.derived_id("swallow"), user_id="u1", action="swallow_conflict", resource_type="test",
                        resource_id=p.key, details={}, timestamp=utcnow(), success=True).execute()
        if first:
            open(p.marker, "w").close()
            # What the server sends a deadlock's victim, caught: the handler's mistake (its transaction
            # is aborted, and the COMMIT rolls it back).
            statement = ("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"
                         if p.error == "deadlock" else "SELECT 1 / 0")
            with contextlib.suppress(peewee.DatabaseError), db.atomic() if p.savepoint else contextlib.nullcontext():
                db.execute_sql(statement)
    return {"key": p.key, "first": first}
