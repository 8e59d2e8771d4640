"""A team's job types, as a package outside slimyq declares them: registered through the
``slimyq.job_types`` entry point of the tiny ``slimyq_testjobs-0.1.dist-info`` next to it (on
``PYTHONPATH`` in the tests), handlers next to their declarations, peewee only inside them."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field

from slimyq import JobContext, Payload, PermanentError, job_type


class IngestClubMetrics(Payload):
    club_id: str = Field(min_length=1, max_length=64)
    members: int = Field(ge=0)
    user_id: str | None = None


class ClubClosed(PermanentError):
    error_type = "club_closed"


@job_type("ingest_club_metrics", queue="database", payload=IngestClubMetrics,
          help="Record a club's member count (once per job, whatever the retries).")
def ingest_club_metrics(p: IngestClubMetrics, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import AuditLog, utcnow
    from slimyq.jobs.base import iso
    from slimyq.jobs.effects import once

    if p.club_id == "closed":
        raise ClubClosed(f"club {p.club_id} is closed")
    row_id = ctx.derived_id("club_metrics")

    def apply() -> dict[str, Any]:
        now = utcnow()
        AuditLog.insert(id=row_id, user_id=p.user_id, action="club_metrics", resource_type="club",
                        resource_id=p.club_id, details={"members": p.members}, timestamp=now,
                        success=True).on_conflict_ignore().execute()
        model = club_metrics_model()
        with ctx.db.bind_ctx([model]):  # the team's own table, written in the job's transaction
            ctx.db.create_tables([model], safe=True)
            model.insert(id=row_id, club=p.club_id, members=p.members).execute()
        return {"success": True, "recordId": row_id, "members": p.members, "recordedAt": iso(now)}

    return once(ctx, "ingest_club_metrics", apply)


@functools.cache
def club_metrics_model() -> Any:
    """The team's own peewee model (defined on first use: enqueueing never imports peewee)."""
    import peewee

    class ClubMetrics(peewee.Model):
        id = peewee.CharField(primary_key=True, max_length=36)
        club = peewee.CharField(max_length=64)
        members = peewee.IntegerField()

        class Meta:
            table_name = "team_club_metrics"

    return ClubMetrics
