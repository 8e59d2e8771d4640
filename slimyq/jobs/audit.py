"""Handlers of the ``audit`` queue: event logging, cleanup and reports.

Effect-once: a ``log_event`` row's id is derived from its ``requestId`` (with the action and
resource, so one request may log several distinct events) or, without one, from the job id; a
``bulk_log_events`` row's id from the job id and the event's index. Rows are inserted with
on-conflict-ignore, and each job's first result is kept under its job id in ``job_effects``
(:func:`slimyq.jobs.effects.once`), so a retried or redelivered job writes each entry once and
reports the timestamp of the first write, even after ``audit cleanup`` removed the entries.

peewee (the models, cleanup, report, job_effects) is imported inside the handlers: enqueueing
imports this module for its job type declarations and must not import peewee.
"""

from __future__ import annotations

import uuid
from typing import Any

from slimyq.jobs.base import JobContext, iso
from slimyq.jobs.registry import job_type
from slimyq.payloads.audit import AuditCleanup, AuditReport, BulkLogEvents, LogEvent, check_event

_REQUEST_NAMESPACE = uuid.UUID("8f6f7b7e-2f43-4f0e-9d0c-1d3a8c7e5b21")
_INSERT_CHUNK = 500  # rows per INSERT: 13 columns stay far below SQLite's variable limit
CLEANUP_LOCK_WAIT = 60.0  # seconds a cleanup job waits for another cleanup before retrying


class CleanupBusy(Exception):
    """Another cleanup holds the lock: retried later like any transient failure."""

    error_type = "cleanup_busy"


def request_row_id(p: LogEvent) -> str:
    key = f"{p.request_id}\x1f{p.action}\x1f{p.resource_type}\x1f{p.resource_id}"
    return str(uuid.uuid5(_REQUEST_NAMESPACE, key))


def _row(row_id: str, p: LogEvent, now: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "user_id": p.user_id,
        "action": p.action,
        "resource_type": p.resource_type,
        "resource_id": p.resource_id,
        "details": p.details if p.details is not None else {},
        "ip_address": p.ip_address,
        "user_agent": p.user_agent,
        "session_id": p.session_id,
        "request_id": p.request_id,
        "timestamp": now,
        "success": p.success,
        "error_message": p.error_message,
    }


@job_type("log_event", queue="audit", payload=LogEvent,
          help="Write one audit log entry (a retry writes it once).")
def log_event(p: LogEvent, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import AuditLog, utcnow
    from slimyq.jobs.effects import once

    row_id = request_row_id(p) if p.request_id else ctx.derived_id("audit_log")

    def apply() -> dict[str, Any]:
        AuditLog.insert(**_row(row_id, p, utcnow())).on_conflict_ignore().execute()
        logged_at = AuditLog.select(AuditLog.timestamp).where(AuditLog.id == row_id).scalar()
        return {"success": True, "auditLogId": row_id, "loggedAt": iso(logged_at)}

    # A rerun after `audit cleanup` removed the entry must not write it again (a job-effect marker);
    # the request-derived id also keeps two jobs for one request to one entry.
    return once(ctx, "log_event", apply)


@job_type("bulk_log_events", queue="audit", payload=BulkLogEvents,
          help="Write many audit log entries; each succeeds or fails on its own.")
def bulk_log_events(p: BulkLogEvents, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import AuditLog, utcnow
    from slimyq.jobs.effects import once

    checked = [check_event(event) for event in p.events]
    events = {index: event for index, event in enumerate(checked) if isinstance(event, LogEvent)}
    ids = {index: ctx.derived_id(f"audit_log:{index}") for index in events}

    def apply() -> dict[str, Any]:
        now = utcnow()
        rows = [_row(ids[index], event, now) for index, event in events.items()]
        for i in range(0, len(rows), _INSERT_CHUNK):
            AuditLog.insert_many(rows[i : i + _INSERT_CHUNK]).on_conflict_ignore().execute()
        return {"loggedAt": iso(now)}  # every entry of one job has the same timestamp

    # The marker keeps a rerun after `audit cleanup` from writing the entries again.
    logged_at = once(ctx, "bulk_log_events", apply)["loggedAt"] if events else None
    results: list[dict[str, Any]] = []
    for index, event in enumerate(checked):
        if isinstance(event, str):
            results.append({"index": index, "success": False, "error": event})
        else:
            results.append({"index": index, "success": True, "auditLogId": ids[index], "loggedAt": logged_at})
    errors = sum(1 for r in results if not r["success"])
    return {
        "success": errors == 0,
        "results": results,
        "summary": {"total": len(results), "success": len(results) - errors, "errors": errors},
    }


@job_type("audit_cleanup", queue="audit", payload=AuditCleanup,
          help="Delete audit entries older than beforeDate, in batches, except excludeActions.")
def audit_cleanup(p: AuditCleanup, ctx: JobContext) -> dict[str, Any]:
    from slimyq.audit.cleanup import BUSY_MESSAGE, cleanup

    result = cleanup(ctx.db, p.before_date, p.exclude_actions, batch_size=p.batch_size, wait=CLEANUP_LOCK_WAIT)
    if result.skipped:
        raise CleanupBusy(BUSY_MESSAGE)
    return {"success": True, "deletedCount": result.deleted}


@job_type("audit_report", queue="audit", payload=AuditReport,
          help="Summarise audit entries between startDate and endDate.")
def audit_report(p: AuditReport, ctx: JobContext) -> dict[str, Any]:
    from slimyq.audit.report import build_report
    from slimyq.db.models import utcnow

    report = build_report(ctx.db, p.start_date, p.end_date, top=p.top).wire()
    if p.report_type:
        report["reportType"] = p.report_type
    report["generatedAt"] = iso(utcnow())
    return report
