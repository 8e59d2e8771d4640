"""`slimyq stats|workers|jobs|check|metrics` against a known state in the private Valkey."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import Result

sys.path.insert(0, str(Path(__file__).parents[1] / "inspect"))
from inspect_scenario import LIVE, Scenario, build, register_worker

from slimyq.cli.inspect_cmds import short_duration

Cli = Callable[..., Result]


@pytest.fixture
def scenario(r: redis.Redis) -> Scenario:
    return build(r)


def test_stats_json_numbers(cli: Cli, scenario: Scenario) -> None:
    result = cli("stats", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["queue"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["chat", "database", "audit"]
    db = rows["database"]
    assert {k: db[k] for k in ("queued", "started", "finished", "failed", "workers", "concurrency", "paused",
                               "success_rate", "per_min_5")} == {
        "queued": 4, "started": 2, "finished": 3, "failed": 1, "workers": 1, "concurrency": 10, "paused": False,
        "success_rate": 75.0, "per_min_5": 0.8}
    assert rows["audit"]["paused"] is True and rows["audit"]["queued"] == 2
    assert "by_type" not in db


def test_stats_table_ndjson_csv_by_type(cli: Cli, scenario: Scenario) -> None:
    table = cli("stats")
    assert table.exit_code == 0
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["queue", "queued", "started", "sched", "done", "failed", "workers", "oldest", "ok%",
                              "p50", "p95", "per_min"]
    line = next(x for x in lines if "database" in x)
    assert line.split()[:7] == ["database", "4", "2", "0", "3", "1", "1x10"]
    assert "audit (paused)" in table.stdout
    nd = [json.loads(x) for x in cli("stats", "--format", "ndjson", "database").stdout.splitlines()]
    assert len(nd) == 1 and nd[0]["failed"] == 1
    plain = json.loads(cli("stats", "--json").stdout)
    by_type = json.loads(cli("stats", "--by-type", "--json").stdout)
    assert isinstance(plain, list) and isinstance(by_type, list)  # one shape: a record per queue
    assert [q["queue"] for q in by_type] == [q["queue"] for q in plain] and "by_type" not in plain[0]
    db = next(q for q in by_type if q["queue"] == "database")
    assert [(t["type"], t["completed"]) for t in db["by_type"]] == [("create_conversation", 3)]
    rows = list(csv.DictReader(io.StringIO(cli("stats", "--by-type", "-f", "csv").stdout)))
    assert {r["section"] for r in rows} == {"queues", "by_type"}
    bad = cli("stats", "nope")
    assert bad.exit_code == 2 and "unknown queue 'nope'" in bad.stderr


def test_stats_watch_without_terminal_prints_once(cli: Cli, scenario: Scenario) -> None:
    result = cli("stats", "--watch")
    assert result.exit_code == 0 and result.stdout.count("database") == 1


def test_workers(cli: Cli, scenario: Scenario) -> None:
    register_worker(scenario.conn, "slimyq.hostC.300.chat", "chat", beat_age=600)  # stale: hidden
    result = cli("workers", "--json")
    assert result.exit_code == 0
    (w,) = json.loads(result.stdout)
    assert (w["name"], w["host"], w["pid"], w["queues"], w["state"]) == (LIVE, "hostA", 100, ["database"], "busy")
    assert w["current_jobs"] == ["db-3"] and w["jobs_done"] == 4 and w["last_heartbeat"]
    table = cli("workers")
    assert LIVE in table.stdout and "db-3" in table.stdout and "hostC" not in table.stdout


def test_jobs_listing(cli: Cli, scenario: Scenario) -> None:
    result = cli("jobs", "database", "--state", "failed", "--json")
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert (row["id"], row["state"], row["user"], row["error"]) == ("db-2", "failed", "u1", "boom: bad title")
    rows = [json.loads(x) for x in cli("jobs", "--user", "u2", "-f", "ndjson").stdout.splitlines()]
    assert sorted(r["id"] for r in rows) == ["db-7", "db-8", "db-9"]
    rows = list(csv.DictReader(io.StringIO(cli("jobs", "--state", "queued", "--state", "started", "--limit", "3",
                                               "-f", "csv").stdout)))
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"queued", "started"}
    assert json.loads(cli("jobs", "--type", "canary", "--since", "1h", "--json").stdout)[0]["type"] == "canary"
    assert cli("jobs", "--state", "nope").exit_code == 2
    assert cli("jobs", "--since", "yesterday").exit_code == 2
    assert cli("jobs", "--type", "no-such-type").exit_code == 2
    table = cli("jobs", "--limit", "50")
    assert table.stdout.count("database") == 10


def test_check_exit_codes(cli: Cli, scenario: Scenario, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    result = cli("check")
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert "error: queue database: 1 started job whose worker is gone: db-5 (slimyq job requeue ID)" in lines
    assert any(x.startswith("warning: chat runs in fallback mode") for x in lines)
    data = json.loads(cli("check", "--json").stdout)
    assert data["healthy"] is False and [p["check"] for p in data["problems"] if p["level"] == "error"] == ["stuck"]
    scenario.conn.delete("rq:wip:database")
    quiet = cli("check", "--max-age", "10m")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ok = cli("check", "--max-age", "10m", "-v")
    assert ok.exit_code == 0, ok.stdout
    assert ok.stdout.splitlines()[-1] == "healthy: 3 queues, 1 live worker" and ok.stderr == ""
    assert cli("check", "--max-backlog", "1").exit_code == 1
    assert cli("check", "--max-age", "soon").exit_code == 2


def test_check_redis_unreachable(cli: Cli, tmp_path: Path) -> None:
    result = cli("--redis-url", "redis://:pw-secret@127.0.0.1:1/0", "--database-url", f"sqlite:///{tmp_path}/x.db",
                 "check")
    assert result.exit_code == 1
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "cannot reach Redis" in errors[0] and "pw-secret" not in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_metrics(cli: Cli, scenario: Scenario, tmp_path: Path) -> None:
    result = cli("metrics")
    assert result.exit_code == 0
    assert 'slimyq_queue_jobs{queue="database",state="failed"} 1.0' in result.stdout
    assert 'slimyq_jobs_total{outcome="completed",queue="database",type="create_conversation"} 3.0' in result.stdout
    out = tmp_path / "prom" / "slimyq.prom"
    out.parent.mkdir()
    assert cli("metrics", "--output", str(out)).exit_code == 0
    assert 'slimyq_workers{queue="database"} 1.0' in out.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["slimyq.prom"]
    samples = json.loads(cli("metrics", "--json", "audit").stdout)
    assert {"name": "slimyq_queue_paused", "labels": {"queue": "audit"}, "value": 1.0} in samples


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.00085, "0.850ms"), (0.0125, "12.5ms"), (0.12345, "123ms"), (0.9996, "1.00s"), (3.0, "3.00s"),
    (59.94, "59.9s"), (59.96, "1.00m"), (62.9, "1.05m"), (600, "10.0m"), (9000, "2.50h"), (3.2 * 86400, "3.20d"),
])
def test_table_durations_have_three_significant_figures(seconds: float, shown: str) -> None:
    assert short_duration(seconds) == shown


def test_table_durations_are_within_half_a_percent_from_1ms_to_10min() -> None:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for step in range(0, 2000):
        seconds = 0.001 * 600_000 ** (step / 1999)
        text = short_duration(seconds)
        assert text is not None
        unit = text.lstrip("0123456789.")
        assert abs(float(text.removesuffix(unit)) * units[unit] - seconds) <= 0.005 * seconds, (seconds, text)
