"""Property-based: arbitrary and mutated job hashes and ids, written straight into Redis among good
jobs, served by one real worker process for every example.

Properties, per example: every good job finishes exactly once; every bad job ends failed, once,
with a reason in its attempt record; nothing is left queued, started or claimed; and the worker
process is the one that started (it never dies or restarts because of data).
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from harness import Env, WorkerProc, canaries, tally, wait_until, wip_and_claims
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimyq.runtime import codec

Q = "database"

# ----------------------------------------------------------------- strategies

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
NOT_UTF8 = st.binary(max_size=30).map(lambda b: b + b"\xff\xfe" + b)
NOT_JSON = st.text(max_size=30).map(lambda t: ("{" + t).encode())
NUMERIC = ("retries_left", "timeout", "result_ttl", "failure_ttl")


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _bad_number() -> st.SearchStrategy[bytes]:
    words = st.text(alphabet="abcdefxyz_-", min_size=1, max_size=10).map(str.encode)
    return st.sampled_from([b"inf", b"-inf", b"nan", b"1e999", b"-1e400", b"9" * 400]) | words | NOT_UTF8


def _bad_meta() -> st.SearchStrategy[bytes]:
    wrong = JSON.filter(lambda v: not isinstance(v, dict)).map(_json)
    odd_user = JSON.filter(lambda v: not isinstance(v, str | int) and v is not None).map(
        lambda v: _json({"type": "canary", "user": v}))
    return wrong | odd_user | NOT_UTF8 | NOT_JSON


def _bad_intervals() -> st.SearchStrategy[bytes]:
    shapes = JSON.filter(lambda v: not isinstance(v, list)).map(_json)
    members = st.lists(st.text(max_size=5) | st.integers(max_value=-1) | st.just(True), min_size=1, max_size=3)
    return shapes | members.map(_json) | NOT_UTF8 | NOT_JSON


def _bad_attempts() -> st.SearchStrategy[bytes]:
    shapes = JSON.filter(lambda v: not isinstance(v, list)).map(_json)
    members = st.lists(JSON.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=3)
    return shapes | members.map(_json) | NOT_UTF8 | NOT_JSON


def _bad_data() -> st.SearchStrategy[bytes]:
    not_a_call = JSON.filter(lambda v: not (isinstance(v, list) and len(v) == 4 and isinstance(v[0], str)))
    unregistered = st.text(min_size=1, max_size=30).filter(lambda t: not t.startswith("slimyq.jobs."))
    bad_payload = st.dictionaries(st.sampled_from(["sleepSeconds", "failTimes", "bogus"]),
                                  st.text(max_size=5) | st.integers(min_value=1000) | st.lists(st.none()),
                                  min_size=1, max_size=2)
    return st.one_of(
        st.binary(max_size=60).map(lambda b: b"\x00" + b),  # neither zlib nor JSON
        not_a_call.map(lambda v: zlib.compress(_json(v))),
        unregistered.map(lambda f: zlib.compress(_json([f, None, [], {}]))),
        bad_payload.map(lambda p: zlib.compress(_json(["slimyq.jobs.canary.canary", None, [], p]))),
        st.sampled_from([5, "x", True, 1.5]).map(
            lambda a: zlib.compress(_json(["slimyq.jobs.canary.canary", None, a, {}]))),
        st.just(zlib.compress(b"[" + b" " * 3_000_000 + b"]")),  # beyond max_job_size
    )


FIELD_BREAKERS: dict[str, st.SearchStrategy[bytes]] = {
    **{name: _bad_number() for name in NUMERIC},
    "meta": _bad_meta(),
    "retry_intervals": _bad_intervals(),
    "slimyq_attempts": _bad_attempts(),
    "data": _bad_data(),
    "enqueued_at": NOT_UTF8,
    "created_at": NOT_UTF8,
}


@dataclass(frozen=True)
class Bad:
    job_id: bytes
    fields: dict[bytes, bytes]


def _good_hash() -> dict[bytes, bytes]:
    h = codec.build_job_hash(func_name="slimyq.jobs.canary.canary", payload={"sleepSeconds": 0, "failTimes": 0},
                             queue=Q, job_type="canary", user=None, timeout=10, retry_intervals=[0.5, 1])
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in h.items()}


@st.composite
def mutated(draw: st.DrawFn) -> Bad:
    """A good job hash with one to three fields broken (and sometimes an id that is not UTF-8)."""
    fields = _good_hash()
    for name in draw(st.lists(st.sampled_from(sorted(FIELD_BREAKERS)), min_size=1, max_size=3, unique=True)):
        fields[name.encode()] = draw(FIELD_BREAKERS[name])
    return Bad(_id(draw), fields)


@st.composite
def undecodable_id(draw: st.DrawFn) -> Bad:
    """A good job under an id that is not valid UTF-8."""
    return Bad(b"fz-" + draw(NOT_UTF8) + b"-" + uuid.uuid4().hex.encode(), _good_hash())


@st.composite
def arbitrary(draw: st.DrawFn) -> Bad:
    """Any bytes as field names and values (RQ's status aside, so that the job is claimable)."""
    noise = draw(st.dictionaries(st.binary(min_size=1, max_size=20).filter(lambda k: k != b"status"),
                                 st.binary(max_size=80), max_size=8))
    return Bad(_id(draw), {**noise, b"status": b"queued"})


def _id(draw: st.DrawFn) -> bytes:
    tail = draw(st.binary(max_size=12).filter(lambda b: b":" not in b) | st.just(b""))
    return b"fz-" + uuid.uuid4().hex.encode() + tail


BAD_JOBS = st.lists(mutated() | undecodable_id() | arbitrary(), min_size=1, max_size=8)

# ----------------------------------------------------------------- the worker, shared by the examples


@dataclass
class Served:
    env: Env
    conn: redis.Redis
    worker: WorkerProc
    child: int


@pytest.fixture
def served(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> Iterator[Served]:
    env.reconfigure(worker={"max_job_size": 1024 * 1024})
    worker = start(Q)
    (child,) = worker.wait_children(1)
    yield Served(env, conn, worker, child.pid)
    worker.signal(15)
    assert worker.wait(30) == 0, worker.log()[-3000:]


def _results(conn: redis.Redis, job_id: bytes) -> list[dict[bytes, bytes]]:
    return [f for _i, f in conn.xrange(b"rq:results:" + job_id)]  # type: ignore[union-attr]


def _settled(conn: redis.Redis, bad: list[Bad], good: list[str]) -> bool:
    return tally(conn, good).pending == 0 and all(_results(conn, b.job_id) for b in bad)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(bad=BAD_JOBS, spacing=st.integers(min_value=0, max_value=3))
def test_bad_jobs_among_good_ones(served: Served, bad: list[Bad], spacing: int) -> None:
    conn = served.conn
    good = canaries(served.env, 2)
    for b in bad:
        conn.hset(b"rq:job:" + b.job_id, mapping=b.fields)  # type: ignore[arg-type]
        conn.rpush(f"rq:queue:{Q}", b.job_id)
        good += canaries(served.env, spacing)
    good += canaries(served.env, 2)

    wait_until(lambda: _settled(conn, bad, good), 60, what="every job to end")
    t = tally(conn, good)
    assert (t.finished, t.duplicated) == (len(good), 0), t
    for b in bad:
        entries = _results(conn, b.job_id)
        assert [e[b"type"] for e in entries] == [b"2"], (b, entries)
        assert conn.hget(b"rq:job:" + b.job_id, "status") == b"failed", b
        raw = conn.hget(b"rq:job:" + b.job_id, "slimyq_attempts")
        records = json.loads(raw) if raw else []  # type: ignore[arg-type]
        assert records and records[-1]["outcome"] in ("refused", "failed") and records[-1]["error"], (b, records)
    assert wip_and_claims(conn, (Q,)) == {} and conn.llen(f"rq:queue:{Q}") == 0
    assert [c.pid for c in served.worker.children()] == [served.child], served.worker.log()[-3000:]
    log = served.worker.log()
    assert "died" not in log and "Traceback" not in log, log[-3000:]
