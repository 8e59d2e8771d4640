"""Recent audit entries, newest first, filtered through the indexes (timestamp, (user_id,
timestamp), (action, timestamp))."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import peewee

from slimyq.audit._sql import real_database
from slimyq.db.models import AuditLog
from slimyq.timeparse import to_aware_utc, to_naive_utc

MAX_LIMIT = 10_000
TABLE_COLUMNS = ("timestamp", "user_id", "action", "resource_type", "resource_id", "success", "error_message")


@dataclass(frozen=True)
class AuditEntry:
    id: str
    timestamp: dt.datetime
    user_id: str | None
    action: str
    resource_type: str
    resource_id: str
    success: bool
    error_message: str | None
    details: Any
    ip_address: str | None
    user_agent: str | None
    session_id: str | None
    request_id: str | None


def list_entries(
    db: peewee.Database,
    *,
    user: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    since: dt.datetime | None = None,
    failed: bool = False,
    limit: int = 50,
) -> list[AuditEntry]:
    real_database(db).connect(reuse_if_open=True)
    query = AuditLog.select()
    if user is not None:
        query = query.where(AuditLog.user_id == user)
    if action is not None:
        query = query.where(AuditLog.action == action)
    if resource_type is not None:
        query = query.where(AuditLog.resource_type == resource_type)
    if since is not None:
        query = query.where(AuditLog.timestamp >= to_naive_utc(since))
    if failed:
        query = query.where(AuditLog.success == False)  # noqa: E712
    query = query.order_by(AuditLog.timestamp.desc(), AuditLog.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
    return [
        AuditEntry(
            id=row.id,
            timestamp=to_aware_utc(row.timestamp),
            user_id=row.user_id,
            action=row.action,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            success=bool(row.success),
            error_message=row.error_message,
            details=row.details,
            ip_address=row.ip_address,
            user_agent=row.user_agent,
            session_id=row.session_id,
            request_id=row.request_id,
        )
        for row in query
    ]
