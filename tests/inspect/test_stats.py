"""Queue stats, workers and the Prometheus exposition against a known state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from inspect_scenario import DEAD, LIVE, Scenario, claim, complete, enqueue_db, register_worker, settings

from slimyq.inspect.prom import exposition, write_textfile
from slimyq.inspect.stats import FRONT, queue_stats
from slimyq.inspect.workers import list_workers
from slimyq.runtime import keys


def test_queue_stats_numbers(scenario: Scenario) -> None:
    rows = {s.queue: s for s in queue_stats(scenario.conn, scenario.settings)}
    db = rows["database"]
    assert (db.queued, db.started, db.finished, db.failed, db.scheduled, db.canceled) == (4, 2, 3, 1, 0, 0)
    assert db.workers == 1 and db.capacity == 10 and db.concurrency == 10 and not db.paused
    assert (db.completed_total, db.failed_total, db.retried_total) == (3, 1, 0)
    assert db.success_rate == 75.0
    assert db.avg_seconds is not None and abs(db.avg_seconds - (0.02 + 0.2 + 0.5 + 0.004) / 4) < 0.001
    assert db.p50_seconds is not None and db.p95_seconds is not None
    assert 0.004 <= db.p50_seconds <= 0.25 < db.p95_seconds <= 0.5
    assert db.per_min_5 == 0.8 and db.per_min_15 == round(4 / 15, 2) and 0 < db.per_min_1 <= 4
    assert db.oldest_age_seconds is not None and 0 <= db.oldest_age_seconds < 60

    audit = rows["audit"]
    assert audit.paused and audit.queued == 2 and audit.workers == 0 and audit.success_rate is None
    assert audit.p50_seconds is None and audit.per_min_1 == 0
    chat = rows["chat"]
    assert chat.scheduled == 1 and chat.queued == 0 and chat.oldest_age_seconds is None


def test_by_type_and_subset(scenario: Scenario) -> None:
    (db,) = queue_stats(scenario.conn, scenario.settings, ["database"], by_type=True)
    assert [t.type for t in db.by_type] == ["create_conversation"]
    t = db.by_type[0]
    assert (t.completed, t.failed, t.success_rate) == (3, 1, 75.0)


def test_stale_and_dead_workers_not_counted(scenario: Scenario) -> None:
    conn = scenario.conn
    register_worker(conn, "slimyq.hostC.300.database", "database", beat_age=120)  # stopped beating
    register_worker(conn, "slimyq.hostD.400.database", "database")
    conn.hset(keys.worker("slimyq.hostD.400.database"), "death", "2024-01-01T00:00:00.000000Z")
    conn.sadd(keys.workers("database"), keys.worker(DEAD))  # its key expired long ago
    (db,) = queue_stats(conn, scenario.settings, ["database"])
    assert db.workers == 1
    names = [w.name for w in list_workers(conn, scenario.settings.worker.heartbeat)]
    assert names == [LIVE]


def test_workers_listing(scenario: Scenario) -> None:
    (w,) = list_workers(scenario.conn, scenario.settings.worker.heartbeat)
    assert (w.name, w.host, w.pid, w.queues, w.state, w.concurrency) == (LIVE, "hostA", 100, ["database"], "busy", 10)
    assert w.current_jobs == ["db-3"]
    assert (w.jobs_done, w.successful, w.failed) == (4, 3, 1)
    assert w.last_heartbeat is not None and w.heartbeat_age_seconds is not None and w.heartbeat_age_seconds < 5
    assert list_workers(scenario.conn, 5.0, queues=["chat"]) == []


def test_stats_round_trips_do_not_grow_with_jobs(scenario: Scenario, r: redis.Redis,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = redis.client.Pipeline.execute

    def counting(self: redis.client.Pipeline, raise_on_error: bool = True) -> list[Any]:
        calls.append(len(self.command_stack))
        return original(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counting)
    queue_stats(r, scenario.settings)
    small = list(calls)
    pipe = r.pipeline(transaction=False)
    for i in range(5000):
        pipe.rpush(keys.queue("database"), f"x{i}")
        pipe.zadd(keys.failed("database"), {f"f{i}": time.time() + 100})
    original(pipe)
    calls.clear()
    queue_stats(r, scenario.settings)
    assert len(calls) == len(small) == 2
    assert calls[0] == small[0]  # per queue: a fixed set of commands
    assert calls[1] <= 3 * FRONT + 1  # the first FRONT ids of each queue and the one worker


def test_prometheus_exposition(scenario: Scenario, tmp_path: Path) -> None:
    text = exposition(scenario.conn, scenario.settings)
    assert 'slimyq_queue_jobs{queue="database",state="queued"} 4.0' in text
    assert 'slimyq_queue_jobs{queue="database",state="started"} 2.0' in text
    assert 'slimyq_queue_jobs{queue="chat",state="scheduled"} 1.0' in text
    assert 'slimyq_jobs_total{outcome="completed",queue="database",type="create_conversation"} 3.0' in text
    assert 'slimyq_jobs_total{outcome="failed",queue="database",type="create_conversation"} 1.0' in text
    assert "# TYPE slimyq_job_duration_seconds histogram" in text
    bucket = 'slimyq_job_duration_seconds_bucket{le="%s",queue="database",type="create_conversation"} %s'
    assert bucket % ("0.005", "1.0") in text
    assert bucket % ("0.025", "2.0") in text
    assert bucket % ("0.25", "3.0") in text
    assert bucket % ("0.5", "4.0") in text and bucket % ("+Inf", "4.0") in text
    assert 'slimyq_job_duration_seconds_count{queue="database",type="create_conversation"} 4.0' in text
    assert 'slimyq_workers{queue="database"} 1.0' in text and 'slimyq_workers{queue="audit"} 0.0' in text
    assert 'slimyq_queue_paused{queue="audit"} 1.0' in text

    folder = tmp_path / "textfile"
    folder.mkdir()
    out = folder / "slimyq.prom"
    write_textfile(scenario.conn, scenario.settings, out)
    assert 'slimyq_queue_jobs{queue="database",state="queued"} 4.0' in out.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["slimyq.prom"]


def test_worker_state_comes_from_its_current_jobs(r: redis.Redis) -> None:
    """The review saw `idle` with 2 current jobs and `busy` with none: the stored state lags."""
    register_worker(r, "slimyq.hostE.500.database", "database", state="idle")
    r.sadd(keys.worker_executions("slimyq.hostE.500.database"), "j1:e1", "j2:e2")
    register_worker(r, "slimyq.hostF.600.database", "database", state="busy")
    register_worker(r, "slimyq.hostG.700.database", "database", state="suspended")
    got = {w.name: (w.state, w.current_jobs) for w in list_workers(r, 5.0)}
    assert got == {"slimyq.hostE.500.database": ("busy", ["j1", "j2"]),
                   "slimyq.hostF.600.database": ("idle", []),
                   "slimyq.hostG.700.database": ("suspended", [])}


def test_json_durations_keep_six_significant_digits_near_1ms(r: redis.Redis) -> None:
    s = settings()
    enqueue_db(r, s, ["quick"])
    register_worker(r, LIVE, "database")
    (job,) = claim(r, "database", LIVE, 1)
    complete(r, s, "database", LIVE, job, ok=True, seconds=0.0012345)
    (db,) = queue_stats(r, s, ["database"])
    for value in (db.avg_seconds, db.p50_seconds, db.p95_seconds):  # one job: each is its duration
        assert value == pytest.approx(0.0012345, rel=1e-3)  # round(x, 4) read 0.0012, 2.8% off
