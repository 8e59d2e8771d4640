"""`slimyq history list|stats|prune` end to end (CliRunner: no terminal, like cron) on SQLite,
PostgreSQL and MariaDB: exit codes, the one-line prune output, JSON/CSV, filters."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from slimyq.db.models import JobRun

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


def add(job_id: str, *, ago: dt.timedelta, state: str = "finished", job_type: str = "save_message",
        queue: str = "database", duration: float | None = 10.0, user: str | None = "u1", attempt: int = 1,
        error: str | None = None) -> None:
    JobRun.insert(job_id=job_id, queue=queue, job_type=job_type, attempt=attempt, state=state, user_id=user,
                  ended_at=NOW - ago, duration_ms=duration, error_type="ValueError" if error else None,
                  error_message=error).execute()


@pytest.fixture
def runs(db) -> None:
    add("old", ago=dt.timedelta(days=40), duration=5000)
    add("week", ago=dt.timedelta(days=3), state="failed", error="boom")
    add("r1", ago=dt.timedelta(hours=2), state="retried", job_type="create_conversation", duration=20, error="x")
    add("r1", ago=dt.timedelta(hours=1), job_type="create_conversation", duration=30, attempt=2)
    add("c1", ago=dt.timedelta(minutes=5), queue="chat", job_type="chat_bot_interaction", user="u2", duration=40)


# ----------------------------------------------------------------- list


def test_list_table(cli, runs):
    result = cli("history", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ended_at", "job_id", "attempt", "queue", "job_type", "state", "user_id", "duration_ms",
                                "error_type"]
    order = [next(i for i, ln in enumerate(lines) if f" {job} " in ln) for job in ("c1", "r1", "week", "old")]
    assert order == sorted(order)  # newest first
    assert result.stderr == ""


def test_list_filters_and_json(cli, runs):
    result = cli("history", "list", "--since", "7d", "--type", "create-conversation", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(r["job_id"], r["attempt"], r["state"]) for r in data] == [("r1", 2, "finished"), ("r1", 1, "retried")]
    assert data[1]["error_message"] == "x"
    assert set(data[0]) >= {"queue", "job_type", "user_id", "started_at", "ended_at", "duration_ms", "worker"}

    failed = json.loads(cli("history", "list", "--state", "FAILED", "--json").stdout)
    assert [r["job_id"] for r in failed] == ["week"]
    chat = json.loads(cli("history", "list", "--queue", "chat", "--user", "u2", "--json").stdout)
    assert [r["job_id"] for r in chat] == ["c1"]
    assert len(json.loads(cli("history", "list", "--limit", "2", "--json").stdout)) == 2


def test_list_ndjson_and_csv(cli, runs):
    nd = cli("history", "list", "--since", "1d", "--format", "ndjson")
    assert [json.loads(ln)["job_id"] for ln in nd.stdout.splitlines()] == ["c1", "r1", "r1"]
    out = cli("history", "list", "--since", "1d", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["job_id"] for r in rows] == ["c1", "r1", "r1"]


def test_list_nothing_matches(cli, db):
    result = cli("history", "list")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no job runs match"
    assert json.loads(cli("history", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--state", "exploded"], "--state: 'exploded' is not a history state"),
        (["--since", "yesterday"], "--since:"),
    ],
)
def test_list_bad_options_exit_2(cli, db, args, message):
    result = cli("history", "list", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


# ----------------------------------------------------------------- stats


def test_stats_json(cli, runs):
    result = cli("history", "stats", "--format", "json")  # default: the last 24 h
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    by_queue = {r["queue"]: r for r in data["by_queue"]}
    assert set(by_queue) == {"database", "chat"}
    database = by_queue["database"]
    assert (database["runs"], database["finished"], database["failed"], database["retried"]) == (2, 1, 0, 1)
    assert database["p50_ms"] == pytest.approx(25.0)
    assert database["p95_ms"] == pytest.approx(29.5)
    assert database["max_ms"] == pytest.approx(30.0)
    types = {(r["queue"], r["job_type"]) for r in data["by_type"]}
    assert types == {("database", "create_conversation"), ("chat", "chat_bot_interaction")}

    week = json.loads(cli("history", "stats", "--since", "7d", "--queue", "database", "--json").stdout)
    assert [r["queue"] for r in week["by_queue"]] == ["database"]
    assert week["by_queue"][0]["failure_rate"] == 50.0  # 1 finished, 1 failed


def test_stats_table(cli, runs):
    result = cli("history", "stats", "--since", "60d")
    assert result.exit_code == 0, result.stderr
    assert "job runs by queue" in result.stdout and "job runs by type" in result.stdout
    assert "failure_rate" in result.stdout and "p95_ms" in result.stdout
    assert "5000.00" in result.stdout


def test_stats_empty_and_bad_since(cli, db):
    result = cli("history", "stats")
    assert result.exit_code == 0
    assert "job runs by queue: none" in result.stdout
    bad = cli("history", "stats", "--since", "soon")
    assert bad.exit_code == 2


# ----------------------------------------------------------------- prune


def test_prune_is_silent_without_a_terminal_and_one_line_with_v(cli, runs):
    quiet = cli("history", "prune", "--days", "400")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    result = cli("history", "prune", "--days", "30", "-v")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("deleted 1 job history row older than ")
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""
    assert JobRun.select().count() == 4


def test_prune_dry_run_deletes_nothing(cli, runs):
    result = cli("history", "prune", "--days", "2", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("would delete 2 job history rows older than ")
    assert result.stdout.count("\n") == 1
    assert JobRun.select().count() == 5

    data = json.loads(cli("history", "prune", "--days", "2", "--dry-run", "--format", "json").stdout)
    assert (data["would_delete"], data["dry_run"]) == (2, True)


def test_prune_json_and_small_batches(cli, runs):
    result = cli("history", "prune", "--days", "2", "--batch-size", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["deleted"], data["dry_run"]) == (2, False)
    assert JobRun.select().count() == 3


@pytest.mark.parametrize("args", [[], ["--days", "0"], ["--days", "x"], ["--days", "3", "--batch-size", "0"]])
def test_prune_bad_arguments_exit_2(cli, runs, args):
    result = cli("history", "prune", *args)
    assert result.exit_code == 2
    assert JobRun.select().count() == 5  # nothing deleted


def test_prune_on_an_unmigrated_database_exits_1(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = cli("history", "prune", "--days", "30")
    assert result.exit_code == 1
    assert "slimyq db migrate" in result.stderr
    assert result.stdout == ""


# ----------------------------------------------------------------- shared helpers


def test_show_job_runs_for_job_show_fallback(runs, db, capsys):
    """What `slimyq job show ID` prints when Redis no longer holds the job."""
    from slimyq.cli.history import show_job_runs
    from slimyq.render import Format

    assert show_job_runs(db, "missing", Format.json) is False
    assert capsys.readouterr().out == ""
    assert show_job_runs(db, "r1", Format.json) is True
    data = json.loads(capsys.readouterr().out)
    assert [(r["attempt"], r["state"]) for r in data] == [(1, "retried"), (2, "finished")]
    assert show_job_runs(db, "r1", Format.table) is True
    table = capsys.readouterr().out
    assert "history (no longer in Redis)" in table and "attempts" in table


def test_history_help_lists_the_commands(cli):
    result = cli("history", "--help")
    assert result.exit_code == 0
    for command in ("list", "stats", "prune"):
        assert command in result.stdout
