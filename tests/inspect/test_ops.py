"""Requeue, cancel, delete, pause, empty, prune, and the health check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis
from inspect_scenario import DEAD, LIVE, Scenario, claim, complete, enqueue_db, register_worker, settings

from slimyq.errors import Unreachable
from slimyq.inspect import ops
from slimyq.inspect.health import check, stuck_jobs
from slimyq.runtime import keys


def _status(r: redis.Redis, job_id: str) -> str | None:
    value = r.hget(keys.job(job_id), "status")
    return value.decode() if isinstance(value, bytes) else None


def test_requeue_failed_keeps_history(scenario: Scenario) -> None:
    r = scenario.conn
    r.hset(keys.job("db-2"), "retries_left", 0)
    (done,) = ops.requeue(r, scenario.settings, ["db-2"])
    assert done.ok and done.outcome == "requeued"
    assert _status(r, "db-2") == "queued" and r.ttl(keys.job("db-2")) == -1
    assert r.hget(keys.job("db-2"), "retries_left") == b"2"
    assert r.zscore(keys.failed("database"), "db-2") is None
    assert r.lrange(keys.queue("database"), -1, -1) == [b"db-2"]
    assert len(json.loads(r.hget(keys.job("db-2"), "slimyq_attempts"))) == 1  # type: ignore[arg-type]


def test_requeue_stuck_but_not_running(scenario: Scenario) -> None:
    r = scenario.conn
    results = {d.id: d for d in ops.requeue(r, scenario.settings, ["db-5", "db-3", "db-9", "nope"])}
    assert results["db-5"].ok  # its worker is gone
    assert not results["db-3"].ok and results["db-3"].outcome.startswith("running")
    assert results["db-9"].outcome == "skipped: queued" and results["nope"].outcome == "not found"
    assert r.zcard(keys.started("database")) == 1 and r.smembers(keys.worker_executions(DEAD)) == set()
    assert _status(r, "db-5") == "queued"
    # the dead worker's late completion is stale: nothing written
    assert _status(r, "db-3") == "started"


def test_cancel_and_delete(scenario: Scenario) -> None:
    r = scenario.conn
    got = {d.id: d.outcome for d in ops.cancel(r, ["db-8", "ch-0", "db-3", "db-0"])}
    assert got == {"db-8": "canceled", "ch-0": "canceled", "db-3": "running (its worker is alive)",
                   "db-0": "skipped: finished"}
    assert b"db-8" not in r.lrange(keys.queue("database"), 0, -1) and r.zcard(keys.scheduled("chat")) == 0
    assert r.zcard(keys.canceled("database")) == 1 and _status(r, "db-8") == "canceled"
    # a canceled job can be requeued
    assert ops.requeue(r, scenario.settings, ["db-8"])[0].ok
    got = {d.id: d.outcome for d in ops.delete(r, ["db-0", "db-9", "db-3", "db-5"])}
    assert got == {"db-0": "deleted", "db-9": "deleted", "db-3": "running (its worker is alive)", "db-5": "deleted"}
    assert not r.exists(keys.job("db-0"), keys.results("db-0"), keys.job("db-9"), keys.job("db-5"))
    assert r.zcard(keys.finished("database")) == 2 and r.llen(keys.queue("database")) == 3
    assert r.zcard(keys.started("database")) == 1
    assert ops.delete(r, ["db-3"], force=True)[0].ok and r.zcard(keys.started("database")) == 0


def test_bulk_failed_ids_by_type(scenario: Scenario) -> None:
    assert ops.failed_ids(scenario.conn, "database") == ["db-2"]
    assert ops.failed_ids(scenario.conn, "database", "create-conversation") == ["db-2"]
    assert ops.failed_ids(scenario.conn, "database", "canary") == []


def test_pause_resume_empty_prune(r: redis.Redis) -> None:
    s = settings()
    assert ops.pause(r, "database") and not ops.pause(r, "database")
    enqueue_db(r, s, [f"e-{i}" for i in range(2500)])
    register_worker(r, LIVE, "database")
    assert claim(r, "database", LIVE, 3) == []  # paused: the claim script takes nothing
    assert ops.resume(r, "database") and not ops.resume(r, "database")
    jobs = claim(r, "database", LIVE, 3)
    assert len(jobs) == 3
    assert ops.queued_count(r, "database") == 2497
    assert ops.empty(r, "database", batch=1000) == 2497
    assert r.llen(keys.queue("database")) == 0 and not r.exists(keys.job("e-100"))
    assert r.exists(keys.job("e-0"))  # started jobs stay

    now = time.time()
    pipe = r.pipeline()
    for i in range(60):
        pipe.zadd(keys.finished("database"), {f"old-{i}": now + 1000 + i})
        pipe.hset(keys.job(f"old-{i}"), "status", "finished")
    pipe.zadd(keys.failed("database"), {"gone": now - 5})
    pipe.execute()
    dry = ops.prune(r, s, "database", dry_run=True)
    assert (dry.finished_removed, dry.failed_removed) == (10, 1)
    assert r.zcard(keys.finished("database")) == 60
    done = ops.prune(r, s, "database")
    assert (done.finished_removed, done.failed_removed) == (10, 1)
    assert r.zcard(keys.finished("database")) == 50 and r.zcard(keys.failed("database")) == 0
    assert not r.exists(keys.job("old-0")) and r.exists(keys.job("old-10"))
    for job in jobs:
        complete(r, s, "database", LIVE, job, ok=True, seconds=0.01)


def test_health_check(scenario: Scenario) -> None:
    assert stuck_jobs(scenario.conn, "database") == ["db-5"]
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 3600))
    scenario.conn.hset(keys.job("db-6"), "enqueued_at", old)
    health = check(scenario.settings, lambda: scenario.conn, max_age=300, max_backlog=3, max_failure_rate=10)
    lines = [f"{p.level}: {p.message}" for p in health.problems]
    assert not health.healthy
    assert any(x.startswith("error: queue database: 1 started job whose worker is gone: db-5") for x in lines)
    assert any(x.startswith("error: queue database: oldest queued job waited 1.0h") for x in lines)
    assert "error: queue database: 4 jobs queued (max 3)" in lines
    assert "error: queue database: failure rate 25.0% (max 10%)" in lines
    assert any(x.startswith("warning: queue audit is paused with 2 jobs queued") for x in lines)
    assert any(x.startswith("warning: chat runs in fallback mode") for x in lines)
    assert all("no live worker" not in x for x in lines if x.startswith("error"))  # paused: expected
    assert "warning: queue chat has 1 scheduled job but no live worker" in lines


def test_health_unreachable_redis_and_healthy(r: redis.Redis, tmp_path: Path) -> None:
    s = settings()
    s.data_dir.mkdir(parents=True)

    def down() -> redis.Redis:
        raise Unreachable("cannot reach Redis at redis://127.0.0.1:1/0 (connection refused)")

    health = check(s, down)
    assert not health.healthy
    assert [p.message for p in health.problems if p.level == "error"] == [
        "cannot reach Redis at redis://127.0.0.1:1/0 (connection refused)"]
    enqueue_db(r, s, ["h-0"])
    health = check(s, lambda: r)
    assert not health.healthy
    assert [p.message for p in health.problems if p.level == "error"] == [
        "queue database has 1 job queued but no live worker (start: slimyq worker database)"]
    assert (s.data_dir / "slimyq.sqlite3").exists()  # the database check opened it
    register_worker(r, LIVE, "database")
    health = check(s, lambda: r)
    assert health.healthy and health.workers == 1
    assert [p.level for p in health.problems] == ["warning"]


def test_health_database_unreachable(r: redis.Redis, tmp_path: Path) -> None:
    s = settings().model_copy(update={"database_url": f"sqlite:///{tmp_path}/no/such/dir/x.db"})
    health = check(s, lambda: r)
    assert not health.healthy
    (problem,) = [p for p in health.problems if p.level == "error"]
    assert problem.check == "database" and "database" in problem.message
    pg = settings().model_copy(update={"database_url": "postgresql://bob:hunter2@127.0.0.1:1/x"})
    (problem,) = [p for p in check(pg, lambda: r).problems if p.level == "error"]
    assert "hunter2" not in problem.message and "database" in problem.message


def test_prune_keeps_jobs_kept_forever(r: redis.Redis) -> None:
    s = settings()
    now = time.time()
    pipe = r.pipeline()
    for i in range(55):
        pipe.zadd(keys.finished("database"), {f"fin-{i}": now + 1000 + i})
        pipe.hset(keys.job(f"fin-{i}"), "status", "finished")
    for i in range(60):  # result_ttl=-1 (RQ: keep forever)
        pipe.zadd(keys.finished("database"), {f"forever-{i}": "+inf"})
        pipe.hset(keys.job(f"forever-{i}"), "status", "finished")
    pipe.execute()
    done = ops.prune(r, s, "database")
    assert done.finished_removed == 5
    assert all(r.zscore(keys.finished("database"), f"forever-{i}") is not None for i in range(60))
