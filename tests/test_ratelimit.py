"""The per-user fixed-window rate limit, decided by the ENQUEUE script itself (against the private
Valkey): only jobs really written take a slot, refusals write and count nothing."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from slimyq import producer, ratelimit
from slimyq.config import Settings, load_settings
from slimyq.errors import RateLimited, UsageError
from slimyq.jobs import registry
from slimyq.payloads.common import validate_payload
from slimyq.runtime import keys


def settings(requests: int = 10, window: int = 60) -> Settings:
    return load_settings(overrides={"rate_limit.requests": requests, "rate_limit.window": window}).settings


def chat(user: str = "u1", job_id: str | None = None) -> producer.EnqueueRequest:
    jt = registry.get("chat_bot_interaction")
    return producer.EnqueueRequest(jt, validate_payload(jt.payload, {"prompt": "hi", "userId": user}), "chat", job_id)


def enqueue(r: redis.Redis, s: Settings, *reqs: producer.EnqueueRequest) -> list[producer.Enqueued]:
    return list(producer.enqueue_many(r, s, reqs))


def count(r: redis.Redis, user: str) -> int:
    return int(r.get(ratelimit.key(user)) or 0)


def test_tenth_passes_eleventh_is_limited_and_not_written(r: redis.Redis) -> None:
    s = settings()
    for _ in range(10):
        enqueue(r, s, chat())
    with pytest.raises(RateLimited) as info:
        enqueue(r, s, chat(job_id="eleventh"))
    assert info.value.exit_code == 75
    assert 1 <= info.value.retry_in <= 60
    assert str(info.value) == f"rate limited, retry in {info.value.retry_in} s"  # the contract's wording
    assert getattr(info.value, "user", None) == "u1"
    assert r.llen(keys.queue("chat")) == 10 and not r.exists(keys.job("eleventh"))
    status = ratelimit.show(r, s, "u1")
    assert (status.user, status.count, status.limit, status.window) == ("u1", 10, 10, 60)
    assert 1 <= status.resets_in <= 60


def test_a_duplicate_job_id_takes_no_slot(r: redis.Redis) -> None:
    s = settings(requests=2)
    assert [d.status for d in enqueue(r, s, chat(job_id="same"))] == ["queued"]
    for _ in range(5):
        assert [d.status for d in enqueue(r, s, chat(job_id="same"))] == ["exists"]
    assert [d.status for d in enqueue(r, s, chat(job_id="same"), chat(job_id="same"))] == ["exists", "exists"]
    assert count(r, "u1") == 1
    enqueue(r, s, chat())  # the second slot is still free
    assert count(r, "u1") == 2


def test_the_same_new_id_twice_in_one_chunk_takes_one_slot(r: redis.Redis) -> None:
    s = settings(requests=1)
    done = enqueue(r, s, chat(job_id="twin"), chat(job_id="twin"))
    assert [d.status for d in done] == ["queued", "exists"]
    assert count(r, "u1") == 1


def test_refused_requests_neither_count_nor_extend_the_window(r: redis.Redis) -> None:
    s = settings(requests=2, window=60)
    enqueue(r, s, chat(), chat())
    ttl_before = r.pttl(ratelimit.key("u1"))
    for _ in range(5):
        with pytest.raises(RateLimited):
            enqueue(r, s, chat())
    assert count(r, "u1") == 2
    assert r.pttl(ratelimit.key("u1")) <= ttl_before
    assert r.llen(keys.queue("chat")) == 2


def test_window_passes_then_requests_pass_again(r: redis.Redis) -> None:
    s = settings(requests=10, window=1)
    for _ in range(10):
        enqueue(r, s, chat())
    with pytest.raises(RateLimited) as info:
        enqueue(r, s, chat())
    assert info.value.retry_in == 1
    deadline = time.monotonic() + 30
    while r.exists(ratelimit.key("u1")) and time.monotonic() < deadline:
        time.sleep(0.05)
    enqueue(r, s, chat())
    assert ratelimit.show(r, s, "u1").count == 1


def test_users_are_counted_apart_and_a_chunk_is_all_or_nothing(r: redis.Redis) -> None:
    s = settings(requests=1)
    enqueue(r, s, chat("a"))
    enqueue(r, s, chat("b"))
    with pytest.raises(RateLimited) as info:
        enqueue(r, s, chat("c"), chat("a"))  # c would fit, but the chunk is refused as a whole
    assert getattr(info.value, "user", None) == "a"
    assert count(r, "c") == 0 and r.llen(keys.queue("chat")) == 2


def test_a_chunk_of_more_jobs_than_one_script_call_takes_is_still_all_or_nothing(r: redis.Redis) -> None:
    s = settings(requests=producer.CALL_JOBS * 2)
    users = [chat(f"u{i}") for i in range(producer.CALL_JOBS * 3)]  # others' jobs: split if unlimited
    with pytest.raises(RateLimited):
        enqueue(r, s, *users, *[chat("heavy") for _ in range(producer.CALL_JOBS * 2 + 1)])
    assert r.llen(keys.queue("chat")) == 0 and count(r, "u0") == 0
    done = enqueue(r, s, *users)  # the same jobs alone: written, one slot each
    assert len(done) == producer.CALL_JOBS * 3 and r.llen(keys.queue("chat")) == len(done) and count(r, "u0") == 1


def test_job_types_without_the_flag_are_not_counted(r: redis.Redis) -> None:
    s = settings(requests=1)
    jt = registry.get("create_conversation")
    p = validate_payload(jt.payload, {"userId": "u1"})
    for _ in range(3):
        enqueue(r, s, producer.EnqueueRequest(jt, p, "database"))
    assert ratelimit.show(r, s, "u1").count == 0
    assert r.keys("slimyq:rl:*") == []


def test_precheck_refuses_without_counting(r: redis.Redis) -> None:
    s = settings(requests=10)
    for _ in range(8):
        enqueue(r, s, chat("a"))
    with pytest.raises(RateLimited) as info:
        ratelimit.precheck(r, s, {"b": 2, "a": 3})
    assert getattr(info.value, "user", None) == "a"
    assert (count(r, "a"), count(r, "b")) == (8, 0)
    ratelimit.precheck(r, s, {"a": 2, "b": 10, "c": 0})
    with pytest.raises(UsageError, match="limit is 10 per 60 s"):
        ratelimit.precheck(r, s, {"z": 11})
    assert count(r, "z") == 0


def test_concurrent_enqueues_are_atomic(r: redis.Redis) -> None:
    s = settings(requests=10)
    admitted: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        conn = redis.Redis(connection_pool=r.connection_pool)
        for _ in range(5):
            try:
                enqueue(conn, s, chat("busy"))
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
    assert r.llen(keys.queue("chat")) == 10


def test_show_and_reset(r: redis.Redis) -> None:
    s = settings()
    fresh = ratelimit.show(r, s, "nobody")
    assert (fresh.count, fresh.resets_in, fresh.limit, fresh.window) == (0, 0, 10, 60)
    assert ratelimit.reset(r, s, "nobody") is False
    odd = "u:1*?[x]"  # odd characters are just part of the key
    for _ in range(10):
        enqueue(r, s, chat(odd))
    assert ratelimit.show(r, s, odd).count == 10
    assert ratelimit.reset(r, s, odd) is True
    assert ratelimit.show(r, s, odd).count == 0
    enqueue(r, s, chat(odd))


