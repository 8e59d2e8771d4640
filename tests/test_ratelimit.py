"""The per-user fixed-window rate limit, against the private Valkey."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from slimyq import ratelimit
from slimyq.config import Settings, load_settings
from slimyq.errors import RateLimited, UsageError
from slimyq.jobs import registry
from slimyq.payloads.common import validate_payload


def settings(requests: int = 10, window: int = 60) -> Settings:
    return load_settings(overrides={"rate_limit.requests": requests, "rate_limit.window": window}).settings


def chat(user: str = "u1") -> tuple[registry.JobType, Any]:
    jt = registry.get("chat_bot_interaction")
    return jt, validate_payload(jt.payload, {"prompt": "hi", "userId": user})


def test_tenth_passes_eleventh_is_limited(r: redis.Redis) -> None:
    s = settings()
    jt, p = chat()
    for _ in range(10):
        ratelimit.admit(r, s, jt, p)
    with pytest.raises(RateLimited) as info:
        ratelimit.admit(r, s, jt, p)
    assert info.value.exit_code == 75
    assert 1 <= info.value.retry_in <= 60
    assert str(info.value) == f"rate limited: retry in {info.value.retry_in} s"
    assert getattr(info.value, "user", None) == "u1"
    status = ratelimit.show(r, s, "u1")
    assert (status.user, status.count, status.limit, status.window) == ("u1", 10, 10, 60)
    assert 1 <= status.resets_in <= 60


def test_refused_requests_neither_count_nor_extend_the_window(r: redis.Redis) -> None:
    s = settings(requests=2, window=60)
    jt, p = chat()
    ratelimit.admit(r, s, jt, p)
    ratelimit.admit(r, s, jt, p)
    ttl_before = r.pttl(ratelimit.key("u1"))
    for _ in range(5):
        with pytest.raises(RateLimited):
            ratelimit.admit(r, s, jt, p)
    assert int(r.get(ratelimit.key("u1")) or 0) == 2
    assert r.pttl(ratelimit.key("u1")) <= ttl_before


def test_window_passes_then_requests_pass_again(r: redis.Redis) -> None:
    s = settings(requests=10, window=1)
    jt, p = chat()
    for _ in range(10):
        ratelimit.admit(r, s, jt, p)
    with pytest.raises(RateLimited) as info:
        ratelimit.admit(r, s, jt, p)
    assert info.value.retry_in == 1
    time.sleep(1.1)
    ratelimit.admit(r, s, jt, p)
    assert ratelimit.show(r, s, "u1").count == 1


def test_users_are_counted_apart(r: redis.Redis) -> None:
    s = settings(requests=1)
    ratelimit.admit(r, s, *chat("a"))
    ratelimit.admit(r, s, *chat("b"))
    with pytest.raises(RateLimited):
        ratelimit.admit(r, s, *chat("a"))


def test_job_types_without_the_flag_are_not_counted(r: redis.Redis) -> None:
    s = settings(requests=1)
    jt = registry.get("create_conversation")
    p = validate_payload(jt.payload, {"userId": "u1"})
    for _ in range(3):
        ratelimit.admit(r, s, jt, p)
    assert ratelimit.show(r, s, "u1").count == 0
    assert r.keys("slimyq:rl:*") == []


def test_admit_many_is_all_or_nothing(r: redis.Redis) -> None:
    s = settings(requests=10)
    ratelimit.admit_many(r, s, {"a": 8})
    with pytest.raises(RateLimited) as info:
        ratelimit.admit_many(r, s, {"b": 2, "a": 3})
    assert getattr(info.value, "user", None) == "a"
    assert ratelimit.show(r, s, "a").count == 8
    assert ratelimit.show(r, s, "b").count == 0
    ratelimit.admit_many(r, s, {"a": 2, "b": 2, "c": 0})
    assert [ratelimit.show(r, s, u).count for u in "abc"] == [10, 2, 0]


def test_more_than_a_window_at_once_is_a_usage_error(r: redis.Redis) -> None:
    s = settings(requests=10)
    with pytest.raises(UsageError, match="limit is 10 per 60 s"):
        ratelimit.admit_many(r, s, {"a": 11})
    assert r.keys("slimyq:rl:*") == []


def test_concurrent_admits_are_atomic(r: redis.Redis) -> None:
    s = settings(requests=10)
    jt, p = chat("busy")
    admitted: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        conn = redis.Redis(connection_pool=r.connection_pool)
        for _ in range(5):
            try:
                ratelimit.admit(conn, s, jt, p)
                ok = True
            except RateLimited:
                ok = False
            with lock:
                admitted.append(ok)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 10 and len(admitted) == 40
    assert ratelimit.show(r, s, "busy").count == 10


def test_show_and_reset(r: redis.Redis) -> None:
    s = settings()
    fresh = ratelimit.show(r, s, "nobody")
    assert (fresh.count, fresh.resets_in, fresh.limit, fresh.window) == (0, 0, 10, 60)
    assert ratelimit.reset(r, s, "nobody") is False
    ratelimit.admit_many(r, s, {"u:1*?[x]": 10})  # odd characters are just part of the key
    assert ratelimit.show(r, s, "u:1*?[x]").count == 10
    assert ratelimit.reset(r, s, "u:1*?[x]") is True
    assert ratelimit.show(r, s, "u:1*?[x]").count == 0
    ratelimit.admit_many(r, s, {"u:1*?[x]": 10})


def test_an_admission_repeated_after_a_lost_reply_counts_once(r: redis.Redis) -> None:
    admit: Any = r.register_script(ratelimit._ADMIT)
    args = [10, 60_000, 3, "same-token"]
    assert [int(v) for v in admit(keys=[ratelimit.key("u1")], args=args)] == [1, 0, 0]
    assert [int(v) for v in admit(keys=[ratelimit.key("u1")], args=args)] == [1, 0, 0]
    assert r.get(ratelimit.key("u1")) == b"3"
