"""The audit queue's payloads and handlers on SQLite, PostgreSQL and MariaDB: contracts, messages,
effect-once reruns, bulk results, cleanup and report jobs."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import uuid

import peewee
import pytest

from slimyq.config import Settings
from slimyq.db import AuditLog
from slimyq.errors import ValidationFailed
from slimyq.jobs import registry
from slimyq.jobs.audit import audit_cleanup, audit_report, bulk_log_events, log_event
from slimyq.jobs.base import JobContext
from slimyq.payloads.audit import MISSING_FIELDS, AuditCleanup, AuditReport, BulkLogEvents, LogEvent
from slimyq.payloads.common import validate_payload

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def ctx(db: peewee.Database, job_id: str = "job-1", attempt: int = 1) -> JobContext:
    return JobContext(job_id=job_id, queue="audit", attempt=attempt, settings=Settings(), db_factory=lambda: db)


def event(**fields: object) -> dict[str, object]:
    return {"action": "login", "resourceType": "session", "resourceId": "s1", **fields}


# ----------------------------------------------------------------- registry and payloads


def test_registered_on_the_audit_queue():
    for name in ("log_event", "bulk_log_events", "audit_cleanup", "audit_report"):
        jt = registry.get(name.replace("_", "-"))
        assert jt.queue == "audit"
        assert jt.func_name == f"slimyq.jobs.audit.{name}"
        assert registry.by_func(jt.func_name) is jt
        assert callable(jt.handler())


def test_audit_types_import_no_peewee():
    code = "import sys, slimyq.jobs.audit; print('peewee' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"resourceType": "session", "resourceId": "s1"},
        {"action": "login", "resourceId": "s1"},
        {"action": "login", "resourceType": "session"},
        {"action": "", "resourceType": "session", "resourceId": "s1"},
        {"action": "login", "resourceType": "  ", "resourceId": "s1"},
        {"action": "login", "resourceType": "session", "resourceId": None},
    ],
)
def test_missing_required_fields_message(data):
    with pytest.raises(ValidationFailed) as info:
        validate_payload(LogEvent, data)
    assert MISSING_FIELDS == "Missing required audit fields: action, resourceType, resourceId"
    assert MISSING_FIELDS in str(info.value)
    assert info.value.exit_code == 2


def test_log_event_payload_accepts_optionals_and_refuses_unknown_fields():
    p = validate_payload(
        LogEvent,
        event(userId="u1", details={"a": 1}, ipAddress="10.0.0.1", userAgent="curl", sessionId="x",
              requestId="req-1", success=False, errorMessage="denied"),
    )
    assert isinstance(p, LogEvent) and p.user_id == "u1" and p.success is False
    with pytest.raises(ValidationFailed, match="bogus: is not a known field"):
        validate_payload(LogEvent, event(bogus=1))
    with pytest.raises(ValidationFailed, match="action: String should have at most 100 characters"):
        validate_payload(LogEvent, event(action="x" * 101))


def test_cleanup_and_report_payloads():
    p = validate_payload(AuditCleanup, {"beforeDate": "2024-01-01T02:00:00+02:00", "excludeActions": ["a"]})
    assert isinstance(p, AuditCleanup)
    assert p.before_date == dt.datetime(2024, 1, 1) and p.exclude_actions == ["a"] and p.batch_size == 5000
    with pytest.raises(ValidationFailed, match="beforeDate: is required"):
        validate_payload(AuditCleanup, {})
    with pytest.raises(ValidationFailed, match="endDate must not be before startDate"):
        validate_payload(AuditReport, {"startDate": "2024-02-01", "endDate": "2024-01-01"})
    with pytest.raises(ValidationFailed, match="events: Input should be a valid list"):
        validate_payload(BulkLogEvents, {"events": "nope"})


# ----------------------------------------------------------------- log_event


def test_log_event_writes_a_row(db):
    p = validate_payload(LogEvent, event(userId="u1", details={"k": "v"}, ipAddress="10.0.0.1"))
    result = log_event(p, ctx(db))  # type: ignore[arg-type]
    assert set(result) == {"success", "auditLogId", "loggedAt"}
    assert result["success"] is True and ISO_Z.match(result["loggedAt"])
    row = AuditLog.get_by_id(result["auditLogId"])
    assert (row.action, row.resource_type, row.resource_id, row.user_id) == ("login", "session", "s1", "u1")
    assert row.details == {"k": "v"} and row.ip_address == "10.0.0.1" and row.success is True


def test_log_event_without_details_stores_an_empty_object(db):
    result = log_event(validate_payload(LogEvent, event()), ctx(db))  # type: ignore[arg-type]
    assert AuditLog.get_by_id(result["auditLogId"]).details == {}


def test_retried_log_event_writes_one_row(db):
    p = validate_payload(LogEvent, event())
    first = log_event(p, ctx(db, "job-7", attempt=1))  # type: ignore[arg-type]
    again = log_event(p, ctx(db, "job-7", attempt=2))  # type: ignore[arg-type]
    assert first == again
    assert AuditLog.select().count() == 1


def test_request_id_is_the_key(db):
    p = validate_payload(LogEvent, event(requestId="req-42"))
    first = log_event(p, ctx(db, "job-a"))  # type: ignore[arg-type]
    second = log_event(p, ctx(db, "job-b"))  # same request re-sent as a new job
    assert first["auditLogId"] == second["auditLogId"]
    other = log_event(validate_payload(LogEvent, event(requestId="req-42", action="logout")), ctx(db, "job-c"))  # type: ignore[arg-type]
    assert other["auditLogId"] != first["auditLogId"]  # another event of the same request
    assert AuditLog.select().count() == 2


# ----------------------------------------------------------------- bulk_log_events


def test_bulk_results_and_summary(db):
    p = validate_payload(
        BulkLogEvents,
        {"events": [event(userId="u1"), {"action": "x"}, event(resourceId="s2"), 5, event(bogus=True)]},
    )
    result = bulk_log_events(p, ctx(db, "bulk-1"))  # type: ignore[arg-type]
    assert result["success"] is False
    assert result["summary"] == {"total": 5, "success": 2, "errors": 3}
    r = result["results"]
    assert [x["index"] for x in r] == [0, 1, 2, 3, 4]
    assert r[0]["success"] and r[2]["success"] and ISO_Z.match(r[0]["loggedAt"])
    assert r[1] == {"index": 1, "success": False, "error": MISSING_FIELDS}
    assert r[3] == {"index": 3, "success": False, "error": "event must be a JSON object, got int"}
    assert r[4]["success"] is False and r[4]["error"].startswith("bogus: is not a known field")
    assert AuditLog.select().count() == 2

    again = bulk_log_events(p, ctx(db, "bulk-1", attempt=2))  # type: ignore[arg-type]
    assert again == result
    assert AuditLog.select().count() == 2


def test_bulk_all_good_and_empty(db):
    ok = bulk_log_events(validate_payload(BulkLogEvents, {"events": [event()] * 3}), ctx(db, "b2"))  # type: ignore[arg-type]
    assert ok["success"] is True and ok["summary"] == {"total": 3, "success": 3, "errors": 0}
    assert len({x["auditLogId"] for x in ok["results"]}) == 3
    empty = bulk_log_events(validate_payload(BulkLogEvents, {"events": []}), ctx(db, "b3"))  # type: ignore[arg-type]
    assert empty == {"success": True, "results": [], "summary": {"total": 0, "success": 0, "errors": 0}}


def test_bulk_larger_than_one_insert_chunk(db):
    events = [event(resourceId=str(i)) for i in range(1200)]
    result = bulk_log_events(validate_payload(BulkLogEvents, {"events": events}), ctx(db, "b4"))  # type: ignore[arg-type]
    assert result["summary"] == {"total": 1200, "success": 1200, "errors": 0}
    assert all(x["loggedAt"] for x in result["results"])
    assert AuditLog.select().count() == 1200


# ----------------------------------------------------------------- cleanup and report jobs


def _add(ts: dt.datetime, action: str = "login", success: bool = True, user: str | None = "u1") -> None:
    AuditLog.insert(id=str(uuid.uuid4()), timestamp=ts, action=action, user_id=user, resource_type="session",
                    resource_id="r", success=success).execute()


def test_audit_cleanup_job(db):
    cut = dt.datetime(2024, 1, 1)
    _add(cut - dt.timedelta(days=1))
    _add(cut - dt.timedelta(days=1), action="keep")
    _add(cut)
    p = validate_payload(AuditCleanup, {"beforeDate": "2024-01-01T00:00:00Z", "excludeActions": ["keep"]})
    assert audit_cleanup(p, ctx(db)) == {"success": True, "deletedCount": 1}  # type: ignore[arg-type]
    assert audit_cleanup(p, ctx(db)) == {"success": True, "deletedCount": 0}  # type: ignore[arg-type]
    assert AuditLog.select().count() == 2


def test_audit_report_job(db):
    _add(dt.datetime(2024, 1, 2), success=True)
    _add(dt.datetime(2024, 1, 3), success=False, action="delete", user="u2")
    _add(dt.datetime(2023, 12, 31))
    p = validate_payload(AuditReport, {"startDate": "2024-01-01", "endDate": "2024-01-31T23:59:59Z"})
    result = audit_report(p, ctx(db))  # type: ignore[arg-type]
    assert result["summary"] == {
        "total": 2, "successful": 1, "failed": 1, "successRate": 50.0,
        "actionBreakdown": {"delete": 1, "login": 1},
    }
    assert result["topUsers"] == [{"userId": "u1", "count": 1}, {"userId": "u2", "count": 1}]
    assert result["topActions"] == [{"action": "delete", "count": 1}, {"action": "login", "count": 1}]
    assert result["topResources"] == [{"resourceType": "session", "count": 2}]
    assert {"action": "delete", "success": False, "count": 1} in result["failureAnalysis"]
    assert ISO_Z.match(result["generatedAt"])


def test_log_event_rerun_after_cleanup_writes_nothing_again(db):
    from slimyq.audit.cleanup import cleanup
    from slimyq.db import utcnow

    p = validate_payload(LogEvent, event(userId="u1"))
    assert isinstance(p, LogEvent)
    first = log_event(p, ctx(db, job_id="log-once"))
    cleanup(db, utcnow() + dt.timedelta(days=1), [])
    assert AuditLog.select().count() == 0
    assert log_event(p, ctx(db, job_id="log-once", attempt=2)) == first
    assert AuditLog.select().count() == 0  # the deleted entry is not written again


def test_bulk_log_events_rerun_after_cleanup_writes_nothing_again(db):
    from slimyq.audit.cleanup import cleanup
    from slimyq.db import utcnow

    p = validate_payload(BulkLogEvents, {"events": [event(), {"action": ""}, event(resourceId="s2")]})
    assert isinstance(p, BulkLogEvents)
    first = bulk_log_events(p, ctx(db, job_id="bulk-once"))
    assert first["summary"] == {"total": 3, "success": 2, "errors": 1}
    cleanup(db, utcnow() + dt.timedelta(days=1), [])
    assert bulk_log_events(p, ctx(db, job_id="bulk-once", attempt=2)) == first
    assert AuditLog.select().count() == 0
