"""`slimyq queue pause|resume|empty|prune`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from typer.testing import Result

sys.path.insert(0, str(Path(__file__).parents[1] / "inspect"))
from inspect_scenario import LIVE, claim, enqueue_db, register_worker, settings

from slimyq.cli import jobcmd
from slimyq.runtime import keys

Cli = Callable[..., Result]


def test_pause_resume(cli: Cli, r: redis.Redis) -> None:
    enqueue_db(r, settings(), ["p-0", "p-1"])
    register_worker(r, LIVE, "database")
    result = cli("queue", "pause", "database")
    assert result.exit_code == 0 and result.stdout == "queue database paused\n"
    assert cli("queue", "pause", "database").stdout == "queue database was already paused\n"
    assert claim(r, "database", LIVE, 2) == []
    assert json.loads(cli("stats", "database", "--json").stdout)[0]["paused"] is True
    assert json.loads(cli("queue", "resume", "database", "--json").stdout) == {
        "queue": "database", "paused": False, "changed": True}
    assert [j.id for j in claim(r, "database", LIVE, 2)] == ["p-0", "p-1"]
    assert cli("queue", "pause", "nope").exit_code == 2


def test_empty(cli: Cli, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    enqueue_db(r, settings(), [f"e-{i}" for i in range(30)])
    dry = cli("queue", "empty", "database", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout == "would delete 30 queued jobs of queue database\n"
    refused = cli("queue", "empty", "database")
    assert refused.exit_code == 2 and refused.stderr.startswith("error: delete 30 queued jobs of queue database")
    assert r.llen(keys.queue("database")) == 30
    monkeypatch.setattr(jobcmd, "interactive", lambda: True)
    declined = cli("queue", "empty", "database", input="n\n")
    assert declined.exit_code == 1 and r.llen(keys.queue("database")) == 30
    done = cli("queue", "empty", "database", input="y\n")
    assert done.exit_code == 0 and done.stdout.endswith("deleted 30 queued jobs of queue database\n")
    assert r.llen(keys.queue("database")) == 0 and not r.exists(keys.job("e-0"))
    again = cli("queue", "empty", "database", "--yes", "--json")
    assert json.loads(again.stdout) == {"queue": "database", "deleted": 0, "count": 0, "dry_run": False}


def test_prune(cli: Cli, r: redis.Redis) -> None:
    now = time.time()
    for i in range(105):
        r.zadd(keys.failed("audit"), {f"f-{i}": now + 100 + i})
        r.hset(keys.job(f"f-{i}"), "status", "failed")
    dry = cli("queue", "prune", "audit", "--dry-run")
    assert dry.stdout == "would remove 0 finished (keeping 50) and 5 failed (keeping 100) jobs of queue audit\n"
    result = cli("queue", "prune", "audit", "--json")
    assert json.loads(result.stdout)["failed_removed"] == 5
    assert r.zcard(keys.failed("audit")) == 100 and not r.exists(keys.job("f-4")) and r.exists(keys.job("f-5"))
