"""RQ's own library and rq-dashboard's app against real ``slimyq worker`` processes: they see the
running jobs through RQ 3's execution records, and nothing they do slows or breaks recovery."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import redis
from harness import Env, WorkerProc, attempts, canaries, dashboard, leftovers, status, wait_done, wait_until
from rq import Worker
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer


def _rq_workers_running(conn: redis.Redis, job_id: str) -> list[Worker]:
    return [w for w in Worker.all(connection=conn, serializer=JSONSerializer)
            if w.get_current_job_id() == job_id]


def test_rq_monitors_see_the_running_job_and_recovery_survives_them(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    (job_id,) = canaries(env, 1, "database", sleep=4)
    worker = start("database")
    (child,) = worker.wait_children(1)
    wait_until(lambda: status(conn, job_id) == "started", 30, what="the job to start")
    # Worker.get_current_job_id() runs get_current_executions(), which prunes members whose
    # execution hash is missing: the member must survive it.
    (rq_worker,) = wait_until(lambda: _rq_workers_running(conn, job_id), 30, what="RQ to see the job")
    assert rq_worker.get_current_job() is not None and rq_worker.get_current_job().id == job_id  # type: ignore[union-attr]
    job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    (execution,) = job.get_executions()
    assert execution.worker_name == rq_worker.name
    assert conn.zscore("rq:wip:database", execution.composite_key) is not None
    first_beat = execution.last_heartbeat
    # Heartbeats move the execution's and the job's last_heartbeat.
    wait_until(lambda: Execution.fetch(execution.id, job_id, conn).last_heartbeat > first_beat, 20,
               what="a heartbeat")
    beat = Job.fetch(job_id, connection=conn, serializer=JSONSerializer).last_heartbeat
    assert beat is not None and beat > job.started_at  # type: ignore[operator]
    assert conn.sismember(f"rq:worker:{rq_worker.name}:executions", execution.composite_key)

    # The worker process dies right after RQ's monitor ran: its supervisor reruns the job at once
    # (the attempt says the worker died, not that heartbeats stopped after abandoned_after).
    rq_worker.get_current_executions(refresh=True)
    child.send_signal(signal.SIGKILL)
    t = wait_done(conn, [job_id], 60)
    assert (t.finished, t.duplicated) == (1, 0), worker.log()[-3000:]
    a = attempts(conn, job_id)
    assert [x["outcome"] for x in a] == ["abandoned", "finished"], a
    assert "died" in a[0]["error"], a
    # Every execution record is gone once the job is done.
    assert not conn.exists(f"rq:executions:{job_id}")
    assert list(conn.scan_iter("rq:execution:*")) == []
    assert not any(w.get_current_job_id() for w in Worker.all(connection=conn, serializer=JSONSerializer))
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_recovery_finds_jobs_whose_executions_set_rq_pruned(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    """Even with the worker's executions set emptied (an RQ tool pruned it while the process was
    frozen past the record's TTL), the supervisor reruns the job as soon as the process dies."""
    (job_id,) = canaries(env, 1, "database", sleep=4)
    worker = start("database")
    (child,) = worker.wait_children(1)
    wait_until(lambda: status(conn, job_id) == "started", 30, what="the job to start")
    child.send_signal(signal.SIGSTOP)
    for key in list(conn.scan_iter("rq:worker:*:executions")):
        conn.delete(key)
    for key in list(conn.scan_iter("rq:execution:*")):
        conn.delete(key)
    child.send_signal(signal.SIGKILL)
    t = wait_done(conn, [job_id], 60)
    assert (t.finished, t.duplicated) == (1, 0), worker.log()[-3000:]
    a = attempts(conn, job_id)
    assert [x["outcome"] for x in a] == ["abandoned", "finished"] and "died" in a[0]["error"], a
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_rq_dashboard_polling_changes_nothing_and_shows_jobs_and_workers(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    """rq-dashboard 0.9's real app, as `rq-dashboard --json` runs it. Its workers page reads each
    worker's current execution (which slimyq keeps) and then fetches the job with pickle whatever
    ``--json`` says, so for any JSON job (a plain RQ JSON worker's too) it answers 500 while the
    job runs: that is rq-dashboard's limitation. What matters here: polling it, as the page does,
    prunes nothing and breaks nothing, and the job and worker pages show slimyq's state."""
    (job_id,) = canaries(env, 1, "database", sleep=3)
    worker = start("database")
    wait_until(lambda: status(conn, job_id) == "started", 30, what="the job to start")
    client = dashboard(env)
    (rq_worker,) = wait_until(lambda: _rq_workers_running(conn, job_id), 30, what="RQ to see the job")
    wait_until(lambda: [w.get_state() for w in _rq_workers_running(conn, job_id)] == ["busy"], 30,
               what="the heartbeat to mark the worker busy")
    for _ in range(5):  # polling, as the dashboard's workers page does every 2.5 s
        client.get("/0/data/workers.json")
    assert conn.scard(f"rq:worker:{rq_worker.name}:executions") == 1
    job_view = client.get(f"/0/data/job/{job_id}.json")
    assert job_view.status_code == 200 and job_view.get_json()["status"] == "started"
    t = wait_done(conn, [job_id], 60)
    assert (t.finished, t.duplicated) == (1, 0)
    assert client.get(f"/0/data/job/{job_id}.json").get_json()["status"] == "finished"

    def idle() -> list[dict[str, Any]]:
        reply = client.get("/0/data/workers.json")
        assert reply.status_code == 200, reply.data
        return [w for w in reply.get_json()["workers"]
                if w["name"] == rq_worker.name and w["current_job"] == "idle" and w["successful_job_count"]]

    (shown,) = wait_until(idle, 30, what="the dashboard to show the worker idle with its count")
    assert shown["queues"] == ["database"] and shown["successful_job_count"] == 1 and shown["failed_job_count"] == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
