"""The producer writes jobs RQ itself reads: hashes, queues, the scheduled registry, dedupe, order."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from slimyq.config import load_settings
from slimyq.errors import SlimyqError, UsageError
from slimyq.jobs import registry
from slimyq.payloads.canary import Canary
from slimyq.payloads.database import CreateConversation
from slimyq.producer import EnqueueRequest, check_job_id, enqueue_many, enqueue_one, wait_for
from slimyq.runtime import codec, keys


@pytest.fixture
def settings(redis_url):
    return load_settings().settings


def conversation(user: str = "u1", **kw) -> EnqueueRequest:
    jt = registry.get("create_conversation")
    return EnqueueRequest(jt, CreateConversation(user_id=user, title="T"), "database", **kw)


def test_job_is_readable_by_rq(r, settings):
    done = enqueue_one(r, settings, conversation("alice"))
    assert done.status == "queued" and done.queue == "database" and done.type == "create_conversation"
    job = Job.fetch(done.id, connection=r, serializer=JSONSerializer)
    assert job.func_name == "slimyq.jobs.database.create_conversation"
    assert job.kwargs == {"userId": "alice", "title": "T", "personalityMode": "helpful"}
    assert job.args == []
    assert job.origin == "database"
    assert job.get_status() == JobStatus.QUEUED
    assert job.meta == {"type": "create_conversation", "user": "alice"}
    assert job.retries_left == 2
    assert job.retry_intervals == [2, 4]
    assert job.timeout == settings.queue("database").timeout
    queue = Queue("database", connection=r, serializer=JSONSerializer)
    assert queue.count == 1
    assert queue.job_ids == [done.id]
    assert "database" in [q.name for q in Queue.all(connection=r, serializer=JSONSerializer)]


def test_same_job_id_twice_enqueues_once(r, settings):
    first = enqueue_one(r, settings, conversation(job_id="conv-1"))
    second = enqueue_one(r, settings, conversation("someone-else", job_id="conv-1"))
    assert (first.id, first.status) == ("conv-1", "queued")
    assert (second.id, second.status) == ("conv-1", "exists")
    assert r.llen(keys.queue("database")) == 1
    assert Job.fetch("conv-1", connection=r, serializer=JSONSerializer).kwargs["userId"] == "u1"


def test_duplicate_ids_inside_one_chunk(r, settings):
    reqs = [conversation(job_id="dup"), conversation(job_id="other"), conversation(job_id="dup")]
    statuses = [d.status for d in enqueue_many(r, settings, reqs)]
    assert statuses == ["queued", "queued", "exists"]
    assert r.llen(keys.queue("database")) == 2


def test_scheduled_job_goes_to_the_scheduled_registry(r, settings):
    when = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    done = enqueue_one(r, settings, conversation(run_at=when))
    assert done.status == "scheduled" and done.scheduled_for == when
    assert r.llen(keys.queue("database")) == 0
    assert r.zscore("rq:scheduled:database", done.id) == pytest.approx(when.timestamp(), abs=1e-3)
    job = Job.fetch(done.id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED
    reg = ScheduledJobRegistry("database", connection=r, serializer=JSONSerializer)
    assert reg.get_job_ids() == [done.id]
    assert abs((reg.get_scheduled_time(done.id) - when).total_seconds()) < 0.01


def test_chunked_enqueue_of_2000_keeps_order(r, settings):
    reqs = [conversation(f"user-{i}", job_id=f"job-{i:04d}") for i in range(2000)]
    done = list(enqueue_many(r, settings, reqs, chunk=300))
    assert [d.id for d in done] == [f"job-{i:04d}" for i in range(2000)]
    assert {d.status for d in done} == {"queued"}
    assert r.lrange(keys.queue("database"), 0, -1) == [f"job-{i:04d}".encode() for i in range(2000)]
    assert Queue("database", connection=r, serializer=JSONSerializer).count == 2000
    assert Job.fetch("job-1999", connection=r, serializer=JSONSerializer).kwargs["userId"] == "user-1999"


def test_mixed_queues_in_one_chunk(r, settings):
    canary = registry.get("canary")
    reqs = [
        conversation(job_id="a"),
        EnqueueRequest(canary, Canary(), "chat", job_id="b"),
        conversation(job_id="c"),
        EnqueueRequest(canary, Canary(sleep_seconds=1), "audit", job_id="d"),
    ]
    assert [d.id for d in enqueue_many(r, settings, reqs)] == ["a", "b", "c", "d"]
    assert r.lrange(keys.queue("database"), 0, -1) == [b"a", b"c"]
    assert r.lrange(keys.queue("chat"), 0, -1) == [b"b"]
    assert Job.fetch("d", connection=r, serializer=JSONSerializer).kwargs == {"sleepSeconds": 1.0, "failTimes": 0}


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 129, "ünï"])
def test_check_job_id_refuses_bad_ids(bad):
    with pytest.raises(UsageError, match="--job-id"):
        check_job_id(bad)
    assert check_job_id("Ok_id-1") == "Ok_id-1"


# ------------------------------------------------------------------ wait_for


def _complete_later(r, job_id: str, fields: dict[str, str], delay: float = 0.3) -> threading.Thread:
    def finish() -> None:
        time.sleep(delay)
        r.xadd(keys.results(job_id), fields)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_wait_for_success(r, settings):
    done = enqueue_one(r, settings, conversation())
    thread = _complete_later(r, done.id, {"type": "1", "return_value": codec.encode_return_value({"success": True})})
    outcome = wait_for(r, done.id, 5)
    thread.join()
    assert (outcome.status, outcome.result) == ("finished", {"success": True})


def test_wait_for_failure_gives_last_line(r, settings):
    done = enqueue_one(r, settings, conversation())
    text = "Traceback (most recent call last):\n  ...\n"
    text += "slimyq.jobs.base.AccessDenied: Conversation not found or access denied\n"
    thread = _complete_later(r, done.id, {"type": "2", "exc_string": codec.encode_exc_string(text)})
    outcome = wait_for(r, done.id, 5)
    thread.join()
    assert outcome.status == "failed"
    assert outcome.error == "Conversation not found or access denied"  # no module path


def test_wait_for_skips_retried_entries(r, settings):
    done = enqueue_one(r, settings, conversation())
    r.xadd(keys.results(done.id), {"type": "4"})
    thread = _complete_later(r, done.id, {"type": "1", "return_value": codec.encode_return_value(7)})
    assert wait_for(r, done.id, 5).result == 7
    thread.join()


def test_wait_for_timeout_says_still_queued(r, settings):
    done = enqueue_one(r, settings, conversation())
    started = time.monotonic()
    outcome = wait_for(r, done.id, 0.5)
    assert outcome.status == "timeout" and outcome.error == "still queued"
    assert time.monotonic() - started < 3


def test_wait_for_a_deleted_job(r, settings):
    done = enqueue_one(r, settings, conversation())
    r.delete(keys.job(done.id))
    with pytest.raises(SlimyqError, match="not found while waiting"):
        wait_for(r, done.id, 5)
