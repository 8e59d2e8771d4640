"""Report numbers against a hand-computed fixture, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt

import pytest

from slimyq.audit.report import ActionCount, Failure, ResourceCount, UserCount, build_report

START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 3, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)


def d(day: int, month: int = 3, **kw: int) -> dt.datetime:
    return dt.datetime(2024, month, day, **kw)


@pytest.fixture
def fixture_rows(add):
    # (timestamp, user, action, resource type, success)
    rows = [
        (d(1), "u1", "login", "session", True),  # exactly at the start: included
        (d(2), "u1", "login", "session", True),
        (d(3), "u1", "login", "session", False),
        (d(4), "u2", "login", "session", True),
        (d(5), "u2", "delete_conversation", "conversation", False),
        (d(6), "u2", "delete_conversation", "conversation", False),
        (d(7), "u3", "create_conversation", "conversation", True),
        (d(8), None, "system_cleanup", "system", True),
        (END.replace(tzinfo=None), "u1", "export", "report", True),  # exactly at the end: included
        (d(29, 2, hour=23, minute=59, second=59, microsecond=999999), "u9", "login", "session", False),
        (d(1, 4), "u9", "login", "session", False),  # just after the end
    ]
    for ts, user, action, resource, ok in rows:
        add(ts, action=action, user=user, resource_type=resource, success=ok)


def test_report_numbers(db, fixture_rows):
    report = build_report(db, START, END)

    s = report.summary
    assert (s.total, s.successful, s.failed, s.success_rate) == (9, 6, 3, 66.67)
    assert report.actions == [
        ActionCount("login", 4, 1),
        ActionCount("delete_conversation", 2, 2),
        ActionCount("create_conversation", 1, 0),
        ActionCount("export", 1, 0),
        ActionCount("system_cleanup", 1, 0),
    ]
    assert report.top_users == [UserCount("u1", 4), UserCount("u2", 3), UserCount("u3", 1)]
    assert report.top_resources == [
        ResourceCount("session", 4),
        ResourceCount("conversation", 3),
        ResourceCount("report", 1),
        ResourceCount("system", 1),
    ]
    assert report.failure_analysis == [
        Failure("delete_conversation", 2, 2, 100.0),
        Failure("login", 4, 1, 25.0),
    ]
    assert set(report.timings) == {"summary_and_actions", "top_users", "top_resources"}


def test_top_limits_each_list(db, fixture_rows):
    report = build_report(db, START, END, top=2)
    assert [u.user_id for u in report.top_users] == ["u1", "u2"]
    assert [a.action for a in report.top_actions] == ["login", "delete_conversation"]
    assert [r.resource_type for r in report.top_resources] == ["session", "conversation"]
    assert len(report.actions) == 5  # the breakdown stays complete


def test_wire_shape(db, fixture_rows):
    wire = build_report(db, START, END).wire()
    assert wire["success"] is True
    assert wire["period"] == {"startDate": "2024-03-01T00:00:00.000Z", "endDate": "2024-03-31T23:59:59.999Z"}
    assert wire["summary"] == {
        "total": 9,
        "successful": 6,
        "failed": 3,
        "successRate": 66.67,
        "actionBreakdown": {
            "login": 4,
            "delete_conversation": 2,
            "create_conversation": 1,
            "export": 1,
            "system_cleanup": 1,
        },
    }
    assert wire["topUsers"][0] == {"userId": "u1", "count": 4}
    assert wire["topActions"][1] == {"action": "delete_conversation", "count": 2}
    assert wire["topResources"][0] == {"resourceType": "session", "count": 4}
    assert wire["failureAnalysis"] == [
        {"action": "login", "success": True, "count": 3},
        {"action": "login", "success": False, "count": 1},
        {"action": "delete_conversation", "success": False, "count": 2},
        {"action": "create_conversation", "success": True, "count": 1},
        {"action": "export", "success": True, "count": 1},
        {"action": "system_cleanup", "success": True, "count": 1},
    ]


def test_empty_period(db, fixture_rows):
    report = build_report(db, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), dt.datetime(2030, 2, 1, tzinfo=dt.UTC))
    s = report.summary
    assert (s.total, s.successful, s.failed, s.success_rate) == (0, 0, 0, 0.0)
    assert report.actions == [] and report.top_users == [] and report.failure_analysis == []
    assert report.wire()["summary"]["actionBreakdown"] == {}
