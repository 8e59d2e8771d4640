"""The enqueue pipeline sends its EVALSHAs without a ``SCRIPT EXISTS`` round trip first, and
loads the script only when the server does not know it (a restart, ``SCRIPT FLUSH``)."""

from __future__ import annotations

from typing import Any

import redis

from slimyq.config import Settings, load_settings
from slimyq.jobs import registry
from slimyq.payloads.database import CreateConversation
from slimyq.producer import CALL_JOBS, EnqueueRequest, enqueue_many


def _requests(n: int) -> list[EnqueueRequest]:
    jt = registry.get("create_conversation")
    return [EnqueueRequest(jt, CreateConversation(user_id="u1", title=f"t{i}"), "database") for i in range(n)]


def _calls(r: redis.Redis) -> dict[str, int]:
    stats: Any = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _settings(redis_url: str) -> Settings:
    return load_settings(overrides={"redis_url": redis_url}).settings


def test_no_script_exists_per_pipeline_and_a_flushed_script_is_loaded_again(r: redis.Redis, redis_url: str) -> None:
    settings = _settings(redis_url)
    r.script_flush()
    r.config_resetstat()
    first = list(enqueue_many(r, settings, _requests(1200), chunk=500))  # three pipelines
    calls = _calls(r)
    assert "script|exists" not in calls
    assert calls.get("script|load") == 1  # once, on the first NOSCRIPT
    per_pipeline = [-(-jobs // CALL_JOBS) for jobs in (500, 500, 200)]  # script calls of each chunk
    assert calls["evalsha"] == sum(per_pipeline) + per_pipeline[0]  # the refused first ones sent again
    assert [e.status for e in first] == ["queued"] * 1200
    assert r.llen("rq:queue:database") == 1200
    # Another client flushes the scripts: the next enqueue loads it again, nothing is lost or doubled.
    r.script_flush()
    again = list(enqueue_many(r, settings, _requests(10)))
    assert [e.status for e in again] == ["queued"] * 10
    assert r.llen("rq:queue:database") == 1210


def test_a_chunk_is_sent_as_calls_of_at_most_call_jobs_in_one_round_trip(r: redis.Redis, redis_url: str) -> None:
    settings = _settings(redis_url)
    jobs = CALL_JOBS * 2 + 1
    list(enqueue_many(r, settings, _requests(1)))  # the script loaded
    r.config_resetstat()
    done = list(enqueue_many(r, settings, _requests(jobs), chunk=jobs))
    assert _calls(r)["evalsha"] == 3
    assert [e.status for e in done] == ["queued"] * jobs
    assert r.lrange("rq:queue:database", 1, -1) == [e.id.encode() for e in done]  # in order
    again = list(enqueue_many(r, settings, [EnqueueRequest(d.job_type, d.payload, d.queue, e.id)
                                            for d, e in zip(_requests(jobs), done, strict=True)], chunk=jobs))
    assert [e.status for e in again] == ["exists"] * jobs and r.llen("rq:queue:database") == jobs + 1
