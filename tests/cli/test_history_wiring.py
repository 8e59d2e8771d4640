"""The job history behind `slimyq jobs --history`, `slimyq stats --since` and `slimyq job show`
once Redis has forgotten a job (SQLite here; the queries themselves run on all three databases
in tests/history)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from slimyq.db import connect_url, database_proxy, migrate
from slimyq.db.models import JobRun

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


@pytest.fixture
def history(tmp_path, monkeypatch, redis_url):
    url = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    db = connect_url(url)
    migrate(db)
    database_proxy.initialize(db)
    rows = [
        ("gone-1", 1, "retried", "u1", 20.0, "boom"),
        ("gone-1", 2, "finished", "u1", 30.0, None),
        ("gone-2", 1, "failed", "u2", 50.0, "Conversation not found or access denied"),
    ]
    for i, (job_id, attempt, state, user, ms, err) in enumerate(rows):
        JobRun.insert(job_id=job_id, queue="database", job_type="save_message", attempt=attempt, state=state,
                      user_id=user, started_at=NOW - dt.timedelta(minutes=10 - i),
                      ended_at=NOW - dt.timedelta(minutes=10 - i), duration_ms=ms,
                      error_type="AccessDenied" if err else None, error_message=err).execute()
    yield db
    db.close()


def test_jobs_history_lists_recorded_attempts(cli, history):
    result = cli("jobs", "--history", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["job_id"], r["attempt"], r["state"]) for r in rows] == [
        ("gone-2", 1, "failed"), ("gone-1", 2, "finished"), ("gone-1", 1, "retried")]
    failed = cli("jobs", "--history", "--state", "failed", "--user", "u2", "--json")
    assert [r["job_id"] for r in json.loads(failed.stdout)] == ["gone-2"]
    bad = cli("jobs", "--history", "--state", "nonsense")
    assert bad.exit_code == 2 and "--state" in bad.stderr


def test_stats_since_reads_history_in_sql(cli, history):
    result = cli("stats", "--since", "1h", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    text = json.dumps(data)
    assert "save_message" in text and "database" in text
    by_type = data["by_type"] if isinstance(data, dict) else data
    row = next(r for r in by_type if r.get("job_type") == "save_message")
    assert row["finished"] == 1 and row["failed"] == 1 and row["retried"] == 1
    assert row["failure_rate"] == pytest.approx(50.0)


def test_job_show_falls_back_to_history(cli, history):
    result = cli("job", "show", "gone-1", "--json")
    assert result.exit_code == 0, result.stderr
    assert "gone-1" in result.stdout and "retried" in result.stdout and "finished" in result.stdout


def test_job_show_history_hides_other_users_jobs(cli, history):
    other = cli("job", "show", "gone-1", "--user", "u2")
    missing = cli("job", "show", "never-was", "--user", "u2")
    assert (other.exit_code, other.stdout, other.stderr.replace("gone-1", "X")) == (
        missing.exit_code, missing.stdout, missing.stderr.replace("never-was", "X"))
    assert other.exit_code == 1
    own = cli("job", "show", "gone-1", "--user", "u1")
    assert own.exit_code == 0
