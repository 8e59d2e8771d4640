"""Odd values in a job hash's fields and ids: each such job fails alone, as refused with a reason
naming the field; the jobs beside it finish and the worker process never restarts."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import redis
from harness import Env, WorkerProc, attempts, canaries, leftovers, tally, wait_done, wait_until

from slimyq.runtime import codec

CANARY = codec.encode_data("slimyq.jobs.canary.canary", {})

# job id -> (field, value, what the refusal must say)
BAD_FIELDS: dict[str, tuple[str, bytes, str]] = {
    "retries-huge": ("retries_left", b"1e999", "'retries_left' is out of range"),
    "retries-inf": ("retries_left", b"inf", "'retries_left' is out of range"),
    "result-ttl-inf": ("result_ttl", b"inf", "'result_ttl' is out of range"),
    "failure-ttl-huge": ("failure_ttl", b"1e999", "'failure_ttl' is out of range"),
    "timeout-nan": ("timeout", b"nan", "'timeout' is out of range"),
    "intervals-x": ("retry_intervals", b'["x"]', "'retry_intervals' is not a JSON array of seconds"),
    "attempts-int": ("slimyq_attempts", b"[1]", "'slimyq_attempts' is not a JSON array of objects"),
    "enqueued-bytes": ("enqueued_at", b"\xff\xfe2026", "'enqueued_at' is not valid UTF-8"),
    "meta-bytes": ("meta", b"\xff", "'meta' is not valid UTF-8"),
    "meta-list": ("meta", b"[1, 2]", "'meta' is not a JSON object"),
    "args-int": ("data", zlib.compress(b'["slimyq.jobs.canary.canary", null, 5, {}]'), "args must be a JSON array"),
    "kwargs-str": ("data", zlib.compress(b'["slimyq.jobs.canary.canary", null, [], "x"]'), "kwargs a JSON object"),
    "bomb": ("data", zlib.compress(b"[" + b" " * 3_000_000 + b"]"), "more than max_job_size (2097152 bytes)"),
}
BAD_ID = b"bad-\xff\xfe-id"


def _raw_job(conn: redis.Redis, job_id: str | bytes, **fields: bytes | str) -> None:
    mapping: dict[str, bytes | str] = {"status": "queued", "origin": "database", "data": CANARY,
                                       "meta": '{"type":"canary"}', **fields}
    conn.hset(b"rq:job:" + (job_id if isinstance(job_id, bytes) else job_id.encode()), mapping=mapping)  # type: ignore[arg-type]
    conn.rpush("rq:queue:database", job_id)


def _failure(conn: redis.Redis, job_id: str | bytes) -> str:
    key = b"rq:results:" + (job_id if isinstance(job_id, bytes) else job_id.encode())
    entries = [f for _i, f in conn.xrange(key)]  # type: ignore[union-attr]
    assert [e[b"type"] for e in entries] == [b"2"], (job_id, entries)
    return codec.decode_exc_string(entries[0][b"exc_string"]) or ""


def test_bad_fields_and_ids_fail_alone_and_the_worker_keeps_going(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(worker={"max_job_size": 2 * 1024 * 1024})
    good = canaries(env, 5)
    for job_id, (name, value, _) in BAD_FIELDS.items():
        _raw_job(conn, job_id, **{name: value})
        good += canaries(env, 3)
    _raw_job(conn, BAD_ID)
    good += canaries(env, 5)

    worker = start("database")
    (child,) = worker.wait_children(1)
    t = wait_done(conn, [*good, *BAD_FIELDS], 60)
    assert (t.finished, t.failed, t.duplicated, t.pending) == (len(good), len(BAD_FIELDS), 0, 0), t
    assert tally(conn, good).finished == len(good)
    wait_until(lambda: conn.exists(b"rq:results:" + BAD_ID), 30, what="the undecodable id to fail")
    assert "job id is not valid UTF-8" in _failure(conn, BAD_ID)
    assert conn.hget(b"rq:job:" + BAD_ID, "status") == b"failed"
    for job_id, (_, _, reason) in BAD_FIELDS.items():
        text = _failure(conn, job_id)
        assert reason in text, (job_id, text)
        (record,) = attempts(conn, job_id)  # refused at once, never retried
        assert record["outcome"] == "refused" and reason in record["error"], (job_id, record)
        assert conn.hget(f"rq:job:{job_id}", "status") == b"failed"

    # Still the same process, still serving, and everything it held is written.
    (late,) = canaries(env, 1)
    assert wait_done(conn, [late], 30).finished == 1
    assert worker.children() == [child], worker.log()[-3000:]
    assert "died" not in worker.log() and "Traceback" not in worker.log()
    worker.signal(15)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_a_key_that_is_not_a_hash_is_dropped_not_fatal(env: Env, conn: redis.Redis,
                                                       start: Callable[..., WorkerProc]) -> None:
    conn.set("rq:job:a-string", "not a hash")
    conn.rpush("rq:queue:database", "a-string")
    conn.xadd("rq:job:a-stream", {"x": "1"})
    conn.rpush("rq:queue:database", "a-stream")
    good = canaries(env, 3)
    worker = start("database")
    assert wait_done(conn, good, 30).finished == 3
    assert conn.get("rq:job:a-string") == b"not a hash"  # left alone
    assert "its key is not a job hash" in worker.log()
    worker.signal(15)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}
