"""`slimyq job show|requeue|cancel|delete` against a known state in the private Valkey."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import Result

sys.path.insert(0, str(Path(__file__).parents[1] / "inspect"))
from inspect_scenario import Scenario, build

from slimyq.cli import jobcmd
from slimyq.runtime import codec, keys

Cli = Callable[..., Result]


@pytest.fixture
def scenario(r: redis.Redis) -> Scenario:
    return build(r)


def test_show_table_and_json(cli: Cli, scenario: Scenario) -> None:
    result = cli("job", "show", "db-2")
    assert result.exit_code == 0, result.stderr
    for text in ("create_conversation", "failed", "ValueError: boom: bad title", "personalityMode", "u1"):
        assert text in result.stdout
    assert "Traceback" not in result.stdout
    full = cli("job", "show", "db-2", "--traceback")
    assert "traceback:\nTraceback (most recent call last):" in full.stdout
    data = json.loads(cli("job", "show", "db-0", "--json").stdout)
    assert data["state"] == "finished" and data["result"] == {"success": True} and "traceback" not in data
    assert data["payload"] == {"userId": "u1", "title": "t", "personalityMode": "helpful"}
    (attempt,) = data["attempts"]
    assert attempt["outcome"] == "finished" and attempt["started_at"] and attempt["ended_at"]
    assert json.loads(cli("job", "show", "db-2", "--json", "--traceback").stdout)["traceback"].startswith("Traceback")


def test_other_users_job_reads_as_missing(cli: Cli, scenario: Scenario) -> None:
    assert cli("job", "show", "db-7", "--user", "u2").exit_code == 0
    other = cli("job", "show", "db-7", "--user", "u1")
    missing = cli("job", "show", "no-such-job", "--user", "u1")
    assert other.exit_code == missing.exit_code == 1
    assert other.stdout == missing.stdout == ""
    expected = "error: job ID not found\n"
    assert other.stderr.replace("db-7", "ID") == missing.stderr.replace("no-such-job", "ID") == expected
    weird = cli("job", "show", "a:b")
    assert weird.exit_code == 1 and weird.stderr == "error: job a:b not found\n"


def test_show_redacts_secrets(cli: Cli, r: redis.Redis) -> None:
    mapping = codec.build_job_hash(func_name="f.g", payload={"userId": "u", "apiKey": "sk-live-123"},
                                   queue="database", job_type="x", user="u", timeout=5, retry_intervals=[2])
    r.hset(keys.job("sec"), mapping=mapping)  # type: ignore[arg-type]
    for fmt in ("table", "json", "csv", "ndjson"):
        result = cli("job", "show", "sec", "-f", fmt)
        assert result.exit_code == 0 and "sk-live-123" not in result.stdout and "***" in result.stdout


def test_requeue_cancel_delete(cli: Cli, scenario: Scenario) -> None:
    r = scenario.conn
    result = cli("job", "requeue", "db-2", "db-5", "db-3")
    assert result.exit_code == 1  # db-3 runs on a live worker
    assert result.stdout.splitlines() == ["db-2: requeued", "db-5: requeued", "db-3: running (its worker is alive)"]
    assert r.lrange(keys.queue("database"), -2, -1) == [b"db-2", b"db-5"]
    result = cli("job", "cancel", "db-9", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [{"id": "db-9", "action": "cancel", "outcome": "canceled", "ok": True}]
    assert r.hget(keys.job("db-9"), "status") == b"canceled"
    result = cli("job", "delete", "db-0", "missing-1")
    assert result.exit_code == 1 and result.stdout.splitlines() == ["db-0: deleted", "missing-1: not found"]
    assert not r.exists(keys.job("db-0"), keys.results("db-0"))
    assert cli("job", "requeue").exit_code == 2
    assert cli("job", "requeue", "db-1", "--failed", "database").exit_code == 2


def test_bulk_requeue_asks(cli: Cli, scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    r = scenario.conn
    dry = cli("job", "requeue", "--failed", "database", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout == "would requeue 1 failed job of queue database\n"
    assert cli("job", "requeue", "--failed", "database", "--type", "canary", "--dry-run", "--json").stdout.count(
        '"count": 0') == 1
    refused = cli("job", "requeue", "--failed", "database")
    assert refused.exit_code == 2 and "pass --yes" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert r.zcard(keys.failed("database")) == 1
    monkeypatch.setattr(jobcmd, "interactive", lambda: True)
    declined = cli("job", "requeue", "--failed", "database", input="n\n")
    assert declined.exit_code == 1 and r.zcard(keys.failed("database")) == 1
    accepted = cli("job", "requeue", "--failed", "database", input="y\n")
    assert accepted.exit_code == 0 and "db-2: requeued" in accepted.stdout
    assert r.zcard(keys.failed("database")) == 0 and r.hget(keys.job("db-2"), "status") == b"queued"


def test_bulk_delete_with_yes(cli: Cli, scenario: Scenario) -> None:
    result = cli("job", "delete", "--failed", "database", "--type", "create-conversation", "--yes")
    assert result.exit_code == 0 and result.stdout == "db-2: deleted\n"
    assert scenario.conn.zcard(keys.failed("database")) == 0
    assert cli("job", "delete", "--failed", "database", "--yes").stdout == "no failed jobs to delete\n"
