"""Registers the ``audit`` queue's job types. Imports pydantic-level modules only (no peewee):
the registry loads it lazily, and enqueueing must stay light."""

from __future__ import annotations

from slimyq.jobs import registry
from slimyq.jobs.registry import JobType
from slimyq.payloads.audit import AuditCleanup, AuditReport, BulkLogEvents, LogEvent

_AUDIT = "slimyq.jobs.audit"

for _job_type in (
    JobType("log_event", "audit", f"{_AUDIT}.log_event", LogEvent,
            help="Write one audit log entry (a retry writes it once)."),
    JobType("bulk_log_events", "audit", f"{_AUDIT}.bulk_log_events", BulkLogEvents,
            help="Write many audit log entries; each succeeds or fails on its own."),
    JobType("audit_cleanup", "audit", f"{_AUDIT}.audit_cleanup", AuditCleanup,
            help="Delete audit entries older than beforeDate, in batches, except excludeActions."),
    JobType("audit_report", "audit", f"{_AUDIT}.audit_report", AuditReport,
            help="Summarise audit entries between startDate and endDate."),
):
    registry.register(_job_type)
