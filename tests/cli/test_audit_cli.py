"""`slimyq audit cleanup|report|list` end to end (CliRunner: no terminal, like cron), on SQLite,
PostgreSQL and MariaDB: exit codes, the one-line output, JSON/CSV, the lock."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zlib

import peewee
import pytest

from slimyq.audit import cleanup as cleanup_mod
from slimyq.audit.lock import cleanup_lock
from slimyq.db import AuditLog


def add(ts: dt.datetime, action: str = "login", user: str | None = "u1", success: bool = True,
        resource_type: str = "session") -> str:
    row_id = str(uuid.uuid4())
    AuditLog.insert(id=row_id, timestamp=ts, action=action, user_id=user, resource_type=resource_type,
                    resource_id="r1", success=success).execute()
    return row_id


def count() -> int:
    return int(AuditLog.select().count())


CUT = dt.datetime(2024, 6, 1)


@pytest.fixture
def rows(db) -> None:
    add(CUT - dt.timedelta(days=10))
    add(CUT - dt.timedelta(days=5), action="security")
    add(CUT - dt.timedelta(days=1), user="u2", success=False)
    add(CUT)
    add(CUT + dt.timedelta(days=1), action="logout")


# ----------------------------------------------------------------- cleanup


def test_cleanup_is_silent_without_a_terminal_and_one_line_with_v(cli, rows):
    quiet = cli("audit", "cleanup", "--before", "2024-05-25", "--exclude-action", "security")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    assert count() == 4
    result = cli("audit", "cleanup", "--before", "2024-06-01", "--exclude-action", "security", "-v")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "deleted 1 audit entry older than 2024-06-01T00:00:00Z, kept actions security\n"
    assert result.stderr == ""
    assert count() == 3


def test_cleanup_nothing_matched_is_success(cli, rows):
    result = cli("audit", "cleanup", "--before", "2000-01-01T00:00:00Z", "--verbose")
    assert result.exit_code == 0
    assert result.stdout == "deleted 0 audit entries older than 2000-01-01T00:00:00Z\n"
    assert count() == 5


def test_cleanup_days(cli, db):
    add(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=40))
    add(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=20))
    result = cli("audit", "cleanup", "--days", "30", "--batch-size", "1", "-v")
    assert result.exit_code == 0
    assert result.stdout.startswith("deleted 1 audit entry older than ")
    assert count() == 1


def test_cleanup_json(cli, rows):
    result = cli("audit", "cleanup", "--before", "2024-06-01", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["deleted"] == 3 and data["skipped"] is False and data["excluded_actions"] == []
    assert data["before"] == "2024-06-01T00:00:00+00:00"


def test_dry_run_deletes_nothing(cli, rows):
    result = cli("audit", "cleanup", "--before", "2024-06-01", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout == (
        "would delete 3 audit entries older than 2024-06-01T00:00:00Z "
        "(oldest 2024-05-22T00:00:00Z, newest 2024-05-31T00:00:00Z)\n"
    )
    assert count() == 5
    as_json = json.loads(cli("audit", "cleanup", "--before", "2024-06-01", "--dry-run", "-f", "json").stdout)
    assert as_json["would_delete"] == 3 and as_json["dry_run"] is True
    assert as_json["oldest"] == "2024-05-22T00:00:00+00:00"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of --days N or --before DATE"),
        (("--days", "3", "--before", "2024-01-01"), "give exactly one of --days N or --before DATE"),
        (("--before", "last tuesday"), "--before: 'last tuesday' is not a date or time"),
        (("--before", "2024-01-01", "--dry-run", "--enqueue"), "--dry-run cannot be combined with --enqueue"),
        (("--days", "0"), "--days"),
        (("--days", "1", "--batch-size", "0"), "--batch-size"),
        (("--days", "1", "--exclude-action", "login "), "--exclude-action: 'login ' must not start or end with"),
        (("--days", "1", "--exclude-action", ""), "--exclude-action: '' must not be empty"),
    ],
)
def test_cleanup_bad_arguments_exit_2(cli, rows, args, message):
    result = cli("audit", "cleanup", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert count() == 5


def test_second_cleanup_exits_0_saying_another_is_running(cli, rows, db):
    with cleanup_lock(db) as held:
        assert held
        result = cli("audit", "cleanup", "--before", "2024-06-01", "-v")
        silent = cli("audit", "cleanup", "--before", "2024-06-01")
    assert result.exit_code == 0
    assert result.stdout == "another audit cleanup is running; nothing done\n"
    assert (silent.exit_code, silent.stdout, silent.stderr) == (0, "", "")
    assert count() == 5
    assert cli("audit", "cleanup", "--before", "2024-06-01", "-v").stdout.startswith("deleted 3 ")


def test_database_error_exits_1_with_what_was_deleted(cli, rows, monkeypatch):
    real = cleanup_mod._one_batch
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise peewee.OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    monkeypatch.setattr(cleanup_mod, "_one_batch", failing)
    result = cli("audit", "cleanup", "--before", "2024-06-01", "--batch-size", "1")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "audit cleanup failed after deleting 1 entry (server closed the connection unexpectedly)" in result.stderr
    assert count() == 4


def test_unreachable_database_exits_1(cli):
    result = cli("--database-url", "postgresql://nobody@127.0.0.1:1/none", "audit", "cleanup", "--days", "30")
    assert result.exit_code == 1
    assert "cannot reach the database" in result.stderr


def test_enqueue_sends_a_cleanup_job(cli, rows, redis_url, r):
    result = cli("audit", "cleanup", "--before", "2024-06-01", "--exclude-action", "security", "--enqueue")
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()
    assert r.lrange("rq:queue:audit", 0, -1) == [job_id.encode()]
    func, _instance, _args, kwargs = json.loads(zlib.decompress(r.hget(f"rq:job:{job_id}", "data")))
    assert func == "slimyq.jobs.audit.audit_cleanup"
    assert kwargs == {"beforeDate": "2024-06-01T00:00:00", "excludeActions": ["security"], "batchSize": 5000}
    assert count() == 5  # nothing deleted in-process


# ----------------------------------------------------------------- report


def test_report_json(cli, rows):
    result = cli("audit", "report", "--start", "2024-05-01", "--end", "2024-06-01", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"]["total"] == 4 and data["summary"]["failed"] == 1  # --end: the whole day
    assert data["summary"]["success_rate"] == 75.0
    assert data["top_users"] == [{"user_id": "u1", "count": 3}, {"user_id": "u2", "count": 1}]
    assert data["actions"] == [{"action": "login", "count": 3, "failed": 1}, {"action": "security", "count": 1,
                                                                              "failed": 0}]
    assert "top_actions" not in data and "action_breakdown" not in data  # the actions, once
    assert data["top_resources"] == [{"resource_type": "session", "count": 4}]
    assert data["failure_analysis"] == [{"action": "login", "total": 3, "failed": 1, "failure_rate": 33.33}]


def test_report_table_and_csv(cli, rows):
    table = cli("audit", "report", "--start", "2024-05-01", "--end", "2024-06-30", "--top", "1")
    assert table.exit_code == 0
    for title in ("summary", "actions", "top users", "top resources", "failure analysis"):
        assert title in table.stdout
    assert "top actions" not in table.stdout and "action breakdown" not in table.stdout
    csv = cli("audit", "report", "--start", "2024-05-01", "--end", "2024-06-30", "--format", "csv")
    assert csv.exit_code == 0
    assert csv.stdout.splitlines()[0].startswith("section,")
    assert any(line.startswith("top_users,") for line in csv.stdout.splitlines())


def test_report_default_period_is_the_last_7_days(cli, db):
    add(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1))
    add(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=8))
    data = json.loads(cli("audit", "report", "--json").stdout)
    assert data["summary"]["total"] == 1
    data = json.loads(cli("audit", "report", "--since", "2w", "--json").stdout)
    assert data["summary"]["total"] == 2


def test_report_empty_table(cli, db):
    result = cli("audit", "report", "--since", "1d")
    assert result.exit_code == 0
    assert "top users: none" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "7d", "--start", "2024-01-01"), "--since cannot be combined with --start/--end"),
        (("--end", "2024-01-01"), "--end needs --start"),
        (("--since", "7x"), "--since: '7x' is neither a duration"),
        (("--start", "2024-02-01", "--end", "2024-01-01"), "--end is before --start"),
        (("--top", "0"), "--top"),
    ],
)
def test_report_bad_arguments_exit_2(cli, db, args, message):
    result = cli("audit", "report", *args)
    assert result.exit_code == 2
    assert message in result.stderr


# ----------------------------------------------------------------- list


def test_list_newest_first_and_filters(cli, rows):
    result = cli("audit", "list", "--json")
    assert result.exit_code == 0
    entries = json.loads(result.stdout)
    assert [e["timestamp"][:10] for e in entries] == ["2024-06-02", "2024-06-01", "2024-05-31", "2024-05-27",
                                                       "2024-05-22"]
    failed = json.loads(cli("audit", "list", "--failed", "--json").stdout)
    assert [e["user_id"] for e in failed] == ["u2"]
    assert len(json.loads(cli("audit", "list", "--user", "u2", "--json").stdout)) == 1
    assert len(json.loads(cli("audit", "list", "--action", "logout", "--json").stdout)) == 1
    assert len(json.loads(cli("audit", "list", "--resource-type", "session", "--limit", "2", "--json").stdout)) == 2
    assert len(json.loads(cli("audit", "list", "--since", "2024-05-31", "--json").stdout)) == 3


def test_list_table_and_ndjson(cli, rows):
    table = cli("audit", "list", "--limit", "1")
    assert table.exit_code == 0
    assert "logout" in table.stdout and "2024-06-02T00:00:00" in table.stdout
    nd = cli("audit", "list", "--format", "ndjson").stdout.splitlines()
    assert len(nd) == 5 and json.loads(nd[0])["action"] == "logout"
    assert cli("audit", "list", "--user", "nobody").stdout == "no audit entries match\n"


def test_list_bad_since_exit_2(cli, db):
    result = cli("audit", "list", "--since", "recently")
    assert result.exit_code == 2
    assert "--since:" in result.stderr


def test_help_lists_the_commands(cli):
    result = cli("audit", "--help")
    assert result.exit_code == 0
    assert "Audit log: cleanup, report, list." in result.stdout
    for name in ("cleanup", "report", "list"):
        assert name in result.stdout
