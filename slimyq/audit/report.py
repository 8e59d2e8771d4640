"""Audit reports, aggregated by the database (GROUP BY), never by loading rows into Python.

The period is inclusive at both ends (``start <= timestamp <= end``), as in the original system.
Three queries: per action (count and failures, which gives the summary, the action breakdown,
the top actions and the failure analysis), top users and top resource types. Ties are broken
by name so reports are stable.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import peewee

from slimyq.audit._sql import real_database, rows_of
from slimyq.db.models import AuditLog
from slimyq.jobs.base import iso
from slimyq.timeparse import to_aware_utc, to_naive_utc


@dataclass(frozen=True)
class Summary:
    start: dt.datetime
    end: dt.datetime
    total: int
    successful: int
    failed: int
    success_rate: float  # percent, two decimals; 0 when there are no entries


@dataclass(frozen=True)
class ActionCount:
    action: str
    count: int
    failed: int


@dataclass(frozen=True)
class UserCount:
    user_id: str
    count: int


@dataclass(frozen=True)
class ResourceCount:
    resource_type: str
    count: int


@dataclass(frozen=True)
class Failure:
    action: str
    total: int
    failed: int
    failure_rate: float  # percent


# The record of each section's rows (AuditReportData.sections): the CSV header, whatever the rows.
SECTION_RECORDS: dict[str, type] = {
    "summary": Summary, "actions": ActionCount, "top_users": UserCount, "top_resources": ResourceCount,
    "failure_analysis": Failure,
}


@dataclass(frozen=True)
class AuditReportData:
    summary: Summary
    actions: list[ActionCount]  # every action, most frequent first
    top_users: list[UserCount]
    top_resources: list[ResourceCount]
    top: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per query

    @property
    def top_actions(self) -> list[ActionCount]:
        return self.actions[: self.top]

    @property
    def failure_analysis(self) -> list[Failure]:
        rows = [a for a in self.actions if a.failed]
        rows.sort(key=lambda a: (-a.failed, a.action))
        return [Failure(a.action, a.count, a.failed, _rate(a.failed, a.count)) for a in rows]

    def sections(self) -> dict[str, Any]:
        """For ``slimyq audit report``: one table per section.

        The actions appear once: every action, most frequent first, with its failures (the job's
        ``topActions`` is the first ``top`` of them, so the CLI does not print it again).
        """
        return {
            "summary": self.summary,
            "actions": self.actions,
            "top_users": self.top_users,
            "top_resources": self.top_resources,
            "failure_analysis": self.failure_analysis,
        }

    def wire(self) -> dict[str, Any]:
        """The ``audit_report`` job's result (the original camelCase shape)."""
        s = self.summary
        failure_rows: list[dict[str, Any]] = []
        for a in self.actions:
            if a.count - a.failed:
                failure_rows.append({"action": a.action, "success": True, "count": a.count - a.failed})
            if a.failed:
                failure_rows.append({"action": a.action, "success": False, "count": a.failed})
        return {
            "success": True,
            "period": {"startDate": iso(s.start), "endDate": iso(s.end)},
            "summary": {
                "total": s.total,
                "successful": s.successful,
                "failed": s.failed,
                "successRate": s.success_rate,
                "actionBreakdown": {a.action: a.count for a in self.actions},
            },
            "topUsers": [{"userId": u.user_id, "count": u.count} for u in self.top_users],
            "topActions": [{"action": a.action, "count": a.count} for a in self.top_actions],
            "topResources": [{"resourceType": r.resource_type, "count": r.count} for r in self.top_resources],
            "failureAnalysis": failure_rows,
        }


def _rate(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def build_report(db: peewee.Database, start: dt.datetime, end: dt.datetime, top: int = 10) -> AuditReportData:
    real_database(db).connect(reuse_if_open=True)
    lo, hi = to_naive_utc(start), to_naive_utc(end)
    in_period = AuditLog.timestamp.between(lo, hi)
    count = peewee.fn.COUNT(AuditLog.id)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    failed_expr = peewee.fn.SUM(peewee.Case(None, [(AuditLog.success == False, 1)], 0))  # noqa: E712
    per_action = (
        AuditLog.select(AuditLog.action, count, failed_expr)
        .where(in_period)
        .group_by(AuditLog.action)
        .order_by(count.desc(), AuditLog.action)
    )
    actions = [ActionCount(str(a), int(n), int(f or 0)) for a, n, f in rows_of(per_action)]
    timings["summary_and_actions"] = round(time.perf_counter() - t0, 4)

    t0 = time.perf_counter()
    users = (
        AuditLog.select(AuditLog.user_id, count)
        .where(in_period & AuditLog.user_id.is_null(False))
        .group_by(AuditLog.user_id)
        .order_by(count.desc(), AuditLog.user_id)
        .limit(top)
    )
    top_users = [UserCount(str(u), int(n)) for u, n in rows_of(users)]
    timings["top_users"] = round(time.perf_counter() - t0, 4)

    t0 = time.perf_counter()
    resources = (
        AuditLog.select(AuditLog.resource_type, count)
        .where(in_period)
        .group_by(AuditLog.resource_type)
        .order_by(count.desc(), AuditLog.resource_type)
        .limit(top)
    )
    top_resources = [ResourceCount(str(r), int(n)) for r, n in rows_of(resources)]
    timings["top_resources"] = round(time.perf_counter() - t0, 4)

    total = sum(a.count for a in actions)
    failed = sum(a.failed for a in actions)
    summary = Summary(
        to_aware_utc(start), to_aware_utc(end), total, total - failed, failed, _rate(total - failed, total)
    )
    return AuditReportData(summary, actions, top_users, top_resources, top, timings)
