"""A plain ``rq worker -S rq.serializers.JSONSerializer`` runs slimyq's job types: the same
validation, effect once and result shape as ``slimyq worker`` (a mixed fleet during a migration)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from harness import Env, WorkerProc, canaries, conversation_rows, conversations, enqueue, status
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from slimyq.jobs import registry
from slimyq.jobs.base import JobContext


def _rq_worker(env: Env, queue: str = "database") -> subprocess.CompletedProcess[str]:
    """A plain RQ worker (forking, RQ's default), in burst mode."""
    environ = {**env.environ, "SLIMYQ_CONFIG": str(env.config)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "worker", queue, "-S", "rq.serializers.JSONSerializer",
         "--url", env.redis_url, "--burst"],
        env=environ, cwd=env.root, capture_output=True, text=True, timeout=180,
    )


def _fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def test_every_registered_handler_is_rq_callable() -> None:
    for jt in registry.all_types():
        assert hasattr(jt.handler(), "__wrapped__"), f"{jt.func_name} is not declared with @job_type"


def test_plain_rq_worker_runs_slimyq_jobs_like_slimyq(env: Env, conn: redis.Redis,
                                                        start: Callable[..., WorkerProc]) -> None:
    (by_rq,) = conversations(env, 1, user="alice")
    (canary,) = canaries(env, 1, "database")
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    # A plain RQ client with RQ's retries: a bad payload still fails at once, naming the field.
    bad = q.enqueue("slimyq.jobs.database.create_conversation", kwargs={"title": "no user"}, retry=Retry(max=3))
    wrong_queue = q.enqueue("slimyq.jobs.chat.message_validation",
                            kwargs={"message": {"role": "user", "content": "hi"}})
    done = _rq_worker(env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unexpected keyword argument" not in done.stderr

    job = _fetch(conn, by_rq)
    assert job.get_status() == "finished"
    value: dict[str, Any] = job.return_value()  # type: ignore[assignment]
    ctx = JobContext(by_rq, "database", 1, env.settings())
    assert value["success"] is True and value["conversationId"] == ctx.derived_id("conversation")
    assert set(value) == {"success", "conversationId", "createdAt"}
    assert _fetch(conn, canary).return_value() == {"success": True, "attempt": 1}

    failed = _fetch(conn, bad.id)
    assert failed.get_status() == "failed" and failed.retries_left == 0
    assert "userId" in (failed.latest_result().exc_string or "")  # type: ignore[union-attr]
    refused = _fetch(conn, wrong_queue.id)
    assert refused.get_status() == "failed"
    assert "belong on the 'chat' queue" in (refused.latest_result().exc_string or "")  # type: ignore[union-attr]

    # Mixed fleet: the same job run again by slimyq's worker has its effect once and returns the
    # same result shape (one row, the same conversation id).
    assert env.cli("job", "requeue", by_rq).returncode == 0
    worker = start("database", "--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert status(conn, by_rq) == "finished"
    again: dict[str, Any] = _fetch(conn, by_rq).return_value()  # type: ignore[assignment]
    assert set(again) == set(value) and again["conversationId"] == value["conversationId"]
    assert conversation_rows(env.db_url) == 1


def test_job_run_by_slimyq_then_by_rq_has_its_effect_once(env: Env, conn: redis.Redis,
                                                            start: Callable[..., WorkerProc]) -> None:
    (job_id,) = enqueue(env, "create_conversation", [{"userId": "bob", "title": "t"}])
    worker = start("database", "--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    first: dict[str, Any] = _fetch(conn, job_id).return_value()  # type: ignore[assignment]
    assert env.cli("job", "requeue", job_id).returncode == 0
    done = _rq_worker(env)
    assert done.returncode == 0, done.stderr[-3000:]
    job = _fetch(conn, job_id)
    assert job.get_status() == "finished" and job.return_value() == first
    assert conversation_rows(env.db_url) == 1


def test_two_json_positional_args_are_not_taken_for_slimyqs_call() -> None:
    """An RQ job hash with two positional args (JSON values, not a payload and a JobContext) goes
    through run_from_rq's validation; it is never handed to the handler as (payload, ctx)."""
    import pytest

    from slimyq.jobs.database import create_conversation

    with pytest.raises(TypeError, match="run it as an RQ job"):
        create_conversation({"userId": "mallory", "title": "t"}, {"job_id": "x"})
