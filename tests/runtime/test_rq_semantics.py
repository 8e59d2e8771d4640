"""RQ's job semantics under ``slimyq worker``, with rq's own library as the client: TTL meanings,
dependents, a cancel that lands mid-run and RQ's stop-job command."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable

import pytest
import redis
from harness import Env, WorkerProc, attempts, dashboard, dashboard_status, leftovers, status, wait_until
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Dependency, Job
from rq.serializers import JSONSerializer

CANARY = "slimyq.jobs.canary.canary"


def _queue(conn: redis.Redis) -> Queue:
    return Queue("database", connection=conn, serializer=JSONSerializer)


def _canary(q: Queue, sleep: float = 0.0, fail: int = 0, **options: object) -> Job:
    return q.enqueue(CANARY, kwargs={"sleepSeconds": sleep, "failTimes": fail}, **options)  # type: ignore[arg-type]


def _fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def _burst(start: Callable[..., WorkerProc]) -> None:
    worker = start("database", "--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]


def test_ttl_meanings(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"database": {"timeout": 1}})
    q = _queue(conn)
    forever = _canary(q, result_ttl=-1)
    gone = _canary(q, result_ttl=0)
    custom = _canary(q, result_ttl=100)
    failed_forever = _canary(q, fail=9, failure_ttl=-1)
    failed_custom = _canary(q, fail=9, failure_ttl=200)
    no_timeout = _canary(q, sleep=2.5, timeout=-1)  # longer than the queue's 1 s timeout
    queued_long = _canary(q, ttl=600)
    expired = _canary(q, ttl=1)
    wait_until(lambda: not conn.exists(f"rq:job:{expired.id}"), 30, what="the queued TTL to expire")
    _burst(start)

    assert status(conn, forever.id) == "finished" and conn.ttl(f"rq:job:{forever.id}") == -1
    assert conn.ttl(f"rq:results:{forever.id}") == -1
    assert conn.zscore("rq:finished:database", forever.id) == math.inf
    assert _fetch(conn, forever.id).return_value() == {"success": True, "attempt": 1}
    assert dashboard_status(dashboard(env), forever.id) == "finished"

    assert not conn.exists(f"rq:job:{gone.id}", f"rq:results:{gone.id}")
    assert conn.zscore("rq:finished:database", gone.id) is None

    assert status(conn, custom.id) == "finished" and 0 < conn.ttl(f"rq:job:{custom.id}") <= 100  # type: ignore[operator]
    assert 0 < conn.ttl(f"rq:results:{custom.id}") <= 100  # type: ignore[operator]

    assert status(conn, failed_forever.id) == "failed" and conn.ttl(f"rq:job:{failed_forever.id}") == -1
    assert conn.zscore("rq:failed:database", failed_forever.id) == math.inf
    assert len(attempts(conn, failed_forever.id)) == 3
    assert status(conn, failed_custom.id) == "failed" and 100 < conn.ttl(f"rq:job:{failed_custom.id}") <= 200  # type: ignore[operator]

    assert status(conn, no_timeout.id) == "finished", attempts(conn, no_timeout.id)
    assert status(conn, queued_long.id) == "finished"
    # A job whose queued TTL ran out is gone, as under RQ: skipped, not refused, nowhere left.
    # Worker counters as RQ counts them: every attempt that raised is a failed job, retries too.
    (wkey,) = [k for k in conn.scan_iter("rq:worker:*") if not k.endswith(b":executions")]
    counts = conn.hmget(wkey, "successful_job_count", "failed_job_count")
    assert [int(c) for c in counts] == [5, 6], counts  # type: ignore[union-attr]
    for registry in ("finished", "failed", "wip"):
        assert not any(m.decode().startswith(expired.id) for m in conn.zrange(f"rq:{registry}:database", 0, -1))  # type: ignore[union-attr]
    assert leftovers(conn) == {}


def test_dependents_enqueued_on_success_and_allowed_failure(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"database": {"attempts": 1}})
    q = _queue(conn)
    parent = _canary(q, sleep=0.3)
    child = _canary(q, depends_on=parent)
    failing = _canary(q, fail=9)
    tolerant = _canary(q, depends_on=Dependency(jobs=[failing], allow_failure=True))
    strict = _canary(q, depends_on=failing)
    both = _canary(q, depends_on=[parent, failing])
    assert status(conn, child.id) == "deferred" and conn.zscore("rq:deferred:database", child.id) is not None
    _burst(start)
    assert status(conn, parent.id) == "finished" and status(conn, failing.id) == "failed"
    assert status(conn, child.id) == "finished"
    assert status(conn, tolerant.id) == "finished"
    assert status(conn, strict.id) == "deferred" and status(conn, both.id) == "deferred"
    # rq-dashboard's registry pages list them where they are (its job page fails on any job with
    # dependencies under rq 3: it decodes dependency ids that are already text).
    client = dashboard(env)

    def listed(registry: str) -> set[str]:
        reply = client.get(f"/0/data/jobs/database/{registry}/100/asc/1.json")
        assert reply.status_code == 200, reply.data
        return {j["id"] for j in reply.get_json()["jobs"]}

    assert {child.id, tolerant.id} <= listed("finished") and {strict.id, both.id} <= listed("deferred")
    assert conn.zscore("rq:deferred:database", child.id) is None


def test_cancel_mid_run_ends_canceled_only(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    q = _queue(conn)
    job = _canary(q, sleep=2)
    worker = start("database")
    wait_until(lambda: _fetch(conn, job.id).get_executions(), 30, what="the job to start")
    _fetch(conn, job.id).cancel()
    # The attempt runs to its end; its result is discarded and its execution record removed.
    wait_until(lambda: not list(conn.scan_iter("rq:execution:*")), 30, what="the execution to end")
    time.sleep(0.5)  # the completion batch that found the job canceled has been written
    assert status(conn, job.id) == "canceled" and dashboard_status(dashboard(env), job.id) == "canceled"
    assert conn.zscore("rq:canceled:database", job.id) is not None
    assert conn.zscore("rq:finished:database", job.id) is None and conn.zscore("rq:failed:database", job.id) is None
    assert not conn.exists(f"rq:results:{job.id}")
    assert conn.zcard("rq:wip:database") == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


@pytest.mark.parametrize("fork", [False, True], ids=["threads", "fork"])
def test_rq_stop_job_command(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], fork: bool) -> None:
    q = _queue(conn)
    job = _canary(q, sleep=60)
    worker = start("database", *(["--fork"] if fork else []))
    wait_until(lambda: _fetch(conn, job.id).get_executions(), 30, what="the job to start")
    if fork:
        wait_until(lambda: any(c.children() for c in worker.children()), 20, what="the forked job process")
    send_stop_job_command(conn, job.id, serializer=JSONSerializer)
    wait_until(lambda: status(conn, job.id) == "stopped", 30, what="the job to stop")
    assert _fetch(conn, job.id).get_status() == "stopped" and dashboard_status(dashboard(env), job.id) == "stopped"
    assert conn.zscore("rq:failed:database", job.id) is not None
    assert [a["outcome"] for a in attempts(conn, job.id)] == ["stopped"]
    # Not retried, and the worker goes on serving.
    (after,) = [_canary(q)]
    wait_until(lambda: status(conn, after.id) == "finished", 30, what="the next job")
    assert status(conn, job.id) == "stopped" and conn.llen("rq:queue:database") == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_rq_delete_mid_run_leaves_nothing(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    q = _queue(conn)
    job = _canary(q, sleep=2)
    worker = start("database")
    wait_until(lambda: _fetch(conn, job.id).get_executions(), 30, what="the job to start")
    _fetch(conn, job.id).delete()
    after = _canary(q)
    wait_until(lambda: status(conn, after.id) == "finished", 30, what="the next job")
    wait_until(lambda: not list(conn.scan_iter("rq:execution:*")), 30, what="the execution to end")
    time.sleep(0.5)  # the completion batch that found the job gone has been written
    assert not conn.exists(f"rq:job:{job.id}", f"rq:results:{job.id}", f"rq:executions:{job.id}")
    assert conn.zscore("rq:finished:database", job.id) is None and conn.zcard("rq:wip:database") == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}
