"""The enqueue pipeline sends its EVALSHAs without a ``SCRIPT EXISTS`` round trip first, and
loads the script only when the server does not know it (a restart, ``SCRIPT FLUSH``)."""

from __future__ import annotations

from typing import Any

import redis

from slimyq.config import Settings, load_settings
from slimyq.jobs import registry
from slimyq.payloads.database import CreateConversation
from slimyq.producer import EnqueueRequest, enqueue_many


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
    assert calls["evalsha"] == 3 + 1  # the refused first call, sent again after the load
    assert [e.status for e in first] == ["queued"] * 1200
    assert r.llen("rq:queue:database") == 1200
    # Another client flushes the scripts: the next enqueue loads it again, nothing is lost or doubled.
    r.script_flush()
    again = list(enqueue_many(r, settings, _requests(10)))
    assert [e.status for e in again] == ["queued"] * 10
    assert r.llen("rq:queue:database") == 1210
