"""Retries with backoff, final failure after the configured attempts, permanent errors at once."""

from __future__ import annotations

from collections.abc import Callable

import redis
from harness import Env, WorkerProc, at, attempts, canaries, leftovers, results, tally
from rq.job import Job
from rq.serializers import JSONSerializer

from slimyq.runtime import codec


def test_fails_twice_then_finishes_on_attempt_3(env: Env, conn: redis.Redis,
                                                start: Callable[..., WorkerProc]) -> None:
    (job_id,) = canaries(env, 1, "database", fail=2)
    worker = start("database", "--burst")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    t = tally(conn, [job_id])
    assert (t.finished, t.duplicated) == (1, 0)
    a = attempts(conn, job_id)
    assert [x["outcome"] for x in a] == ["retried", "retried", "finished"]
    assert [x["attempt"] for x in a] == [1, 2, 3]
    assert a[0]["errorType"] == "canary_failure" and "attempt 1" in a[0]["error"]
    # Backoff 0.5 s then 1 s (backoff_base * 2**i); promotion runs once a second, so allow slack.
    gap1 = (at(a[1]["startedAt"]) - at(a[0]["endedAt"])).total_seconds()
    gap2 = (at(a[2]["startedAt"]) - at(a[1]["endedAt"])).total_seconds()
    assert 0.45 <= gap1 < 3.0 and 0.95 <= gap2 < 4.0, (gap1, gap2)
    job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    assert job.get_status() == "finished"
    assert job.latest_result().return_value == {"success": True, "attempt": 3}  # type: ignore[union-attr]
    counts = {k.decode(): int(v) for k, v in conn.hgetall("slimyq:counts:database").items()}  # type: ignore[union-attr]
    assert counts["canary:retried"] == 2 and counts["canary:completed"] == 1
    assert leftovers(conn) == {}


def test_always_failing_fails_after_exactly_3_attempts(env: Env, conn: redis.Redis,
                                                       start: Callable[..., WorkerProc]) -> None:
    (job_id,) = canaries(env, 1, "chat", fail=5)
    worker = start("chat", "--burst")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    a = attempts(conn, job_id)
    assert [x["outcome"] for x in a] == ["retried", "retried", "failed"]
    (entry,) = results(conn, job_id)
    assert entry[b"type"] == b"2"
    assert "canary failure (attempt 3)" in (codec.decode_exc_string(entry[b"exc_string"]) or "")
    job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    assert job.get_status() == "failed"
    assert "canary failure (attempt 3)" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert conn.zscore("rq:failed:chat", job_id) is not None
    assert leftovers(conn) == {}


def test_plain_rq_invalid_payload_fails_once_naming_the_field(env: Env, conn: redis.Redis,
                                                              start: Callable[..., WorkerProc]) -> None:
    from rq import Queue

    q = Queue("database", connection=conn, serializer=JSONSerializer)
    job = q.enqueue("slimyq.jobs.database.create_conversation", title="x")
    good = q.enqueue("slimyq.jobs.database.create_conversation", userId="u1", title="ok")
    worker = start("database", "--burst")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    a = attempts(conn, job.id)
    assert [x["outcome"] for x in a] == ["failed"]
    assert a[0]["errorType"] == "validation_error"
    assert "userId" in a[0]["error"]
    job.refresh()
    assert job.get_status() == "failed"
    assert "userId" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
    good.refresh()
    assert good.get_status() == "finished"
    assert good.latest_result().return_value["success"] is True  # type: ignore[union-attr,index]
    assert leftovers(conn) == {}


def test_attempts_setting_is_respected(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"audit": {"attempts": 2, "backoff_base": 0.2}})
    ids = canaries(env, 5, "audit", fail=9)
    worker = start("audit", "--burst")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    t = tally(conn, ids)
    assert (t.failed, t.finished, t.duplicated) == (5, 0, 0)
    for job_id in ids:
        assert [x["outcome"] for x in attempts(conn, job_id)] == ["retried", "failed"]
