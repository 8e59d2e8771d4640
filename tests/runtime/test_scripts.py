"""The Lua scripts on their own: CLAIM, COMPLETE and RECOVER against a real Valkey."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import redis

from slimyq.config import QueueSettings, Settings
from slimyq.jobs import registry
from slimyq.payloads.common import validate_payload
from slimyq.producer import EnqueueRequest, enqueue_many
from slimyq.runtime import codec, presence
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result
from slimyq.runtime.outcome import decide
from slimyq.runtime.scripts import Scripts

Q = "database"
W = "w1"


@pytest.fixture
def settings() -> Settings:
    return Settings()


def _enqueue(r: redis.Redis, settings: Settings, n: int, queue: str = Q) -> list[str]:
    jt = registry.get("canary")
    reqs = [EnqueueRequest(jt, validate_payload(jt.payload, {}), queue) for _ in range(n)]
    return [e.id for e in enqueue_many(r, settings, reqs)]


def _claim(r: redis.Redis, n: int, worker: str = W, deadline: float | None = None,
           queue: str = Q) -> tuple[int, list[ClaimedJob]]:
    now = time.time()
    eids = [f"e{i}{int(now * 1000) % 100000}" for i in range(n)]
    reply: Any = Scripts(r).claim(args=[queue, worker, n, f"{now:.6f}", codec.rq_now(),
                                        int(deadline if deadline is not None else now + 60), 1, 60, 1, *eids])
    jobs = [ClaimedJob(row[0].decode(), row[1].decode(), dict(zip(codec.CLAIM_FIELDS, row[2:], strict=False)))
            for row in reply[1:]]
    return int(reply[0]), jobs


def _complete(r: redis.Redis, jobs: list[tuple[ClaimedJob, Result]], qs: QueueSettings,
              worker: str = W) -> list[int]:
    args: list[Any] = [Q, worker, int(time.time()), codec.rq_now(), qs.keep_finished, qs.keep_failed, 30,
                       len(jobs), 0, os.urandom(8).hex()]
    for job, result in jobs:
        args.extend(decide(job, result, qs, worker).args)
    return [int(x) for x in Scripts(r).complete(args=args)]  # type: ignore[union-attr]


def _ok() -> Result:
    return Result(ok=True, value={"success": True}, ended=time.time())


def _members(r: redis.Redis, key: str) -> set[str]:
    return {m.decode() for m in r.zrange(key, 0, -1)}  # type: ignore[union-attr]


def test_claim_on_paused_queue_pops_nothing(r: redis.Redis, settings: Settings) -> None:
    ids = _enqueue(r, settings, 2)
    r.set(f"slimyq:paused:{Q}", 1)
    paused, jobs = _claim(r, 5)
    assert (paused, jobs) == (1, [])
    assert r.llen(f"rq:queue:{Q}") == 2 and r.zcard(f"rq:wip:{Q}") == 0
    r.delete(f"slimyq:paused:{Q}")
    paused, jobs = _claim(r, 5)
    assert paused == 0 and [j.id for j in jobs] == ids
    assert _members(r, f"rq:wip:{Q}") == {f"{j.id}:{j.execution_id}" for j in jobs}
    assert {m.decode() for m in r.smembers(f"rq:worker:{W}:executions")} == _members(r, f"rq:wip:{Q}")  # type: ignore[union-attr]
    for job_id in ids:
        assert r.hget(f"rq:job:{job_id}", "status") == b"started"
        assert r.hget(f"rq:job:{job_id}", "worker_name") == W.encode()


def test_claim_takes_the_claim_list_first(r: redis.Redis, settings: Settings) -> None:
    _a, b = _enqueue(r, settings, 2)
    r.lmove(f"rq:queue:{Q}", f"slimyq:claim:{W}", "RIGHT", "LEFT")  # b sits in our claim list
    _, jobs = _claim(r, 1)
    assert [j.id for j in jobs] == [b]
    assert r.llen(f"slimyq:claim:{W}") == 0 and r.llen(f"rq:queue:{Q}") == 1


def test_complete_with_a_stale_member_writes_nothing(r: redis.Redis, settings: Settings) -> None:
    qs = settings.queue(Q)
    (job_id,) = _enqueue(r, settings, 1)
    _, (job,) = _claim(r, 1)
    r.zrem(f"rq:wip:{Q}", f"{job.id}:{job.execution_id}")  # recovered by someone else meanwhile
    assert _complete(r, [(job, _ok())], qs) == [0]
    assert r.hget(f"rq:job:{job_id}", "status") == b"started"
    assert r.exists(f"rq:results:{job_id}") == 0
    assert r.zcard(f"rq:finished:{Q}") == 0
    assert r.hget(f"rq:job:{job_id}", "slimyq_attempts") is None


def test_complete_applies_once(r: redis.Redis, settings: Settings) -> None:
    qs = settings.queue(Q)
    _enqueue(r, settings, 1)
    _, (job,) = _claim(r, 1)
    assert _complete(r, [(job, _ok())], qs) == [1]
    assert _complete(r, [(job, _ok())], qs) == [0]  # a retried (replayed) completion is a no-op
    assert r.xlen(f"rq:results:{job.id}") == 1
    assert r.smembers(f"rq:worker:{W}:executions") == set()


def test_recover_release_puts_jobs_back_unchanged(r: redis.Redis, settings: Settings) -> None:
    ids = _enqueue(r, settings, 3)
    _, jobs = _claim(r, 2)
    r.lmove(f"rq:queue:{Q}", f"slimyq:claim:{W}", "LEFT", "RIGHT")
    r.sadd(f"slimyq:claims:{Q}", W)
    released = presence.release(r, settings, Q, W)
    assert sorted(released) == sorted(ids)
    assert r.zcard(f"rq:wip:{Q}") == 0
    assert r.exists(f"slimyq:claim:{W}", f"rq:worker:{W}:executions") == 0
    assert r.sismember(f"slimyq:claims:{Q}", W) == 0
    assert sorted(i.decode() for i in r.lrange(f"rq:queue:{Q}", 0, -1)) == sorted(ids)  # type: ignore[union-attr]
    for job_id in ids:
        assert r.hget(f"rq:job:{job_id}", "status") == b"queued"
        assert r.hget(f"rq:job:{job_id}", "slimyq_attempts") is None
        assert r.hget(f"rq:job:{job_id}", "retries_left") == b"2"
    assert {j.id for j in jobs} <= set(ids)


def test_recover_dead_counts_an_attempt_then_fails(r: redis.Redis, settings: Settings) -> None:
    (job_id,) = _enqueue(r, settings, 1)
    outcomes = []
    for _ in range(3):
        _claim(r, 1)
        assert presence.recover_dead(r, settings, Q, W, "signal 9") == [job_id]
        outcomes.append(r.hget(f"rq:job:{job_id}", "status"))
    assert outcomes == [b"queued", b"queued", b"failed"]
    a = json.loads(r.hget(f"rq:job:{job_id}", "slimyq_attempts"))  # type: ignore[arg-type]
    assert [x["outcome"] for x in a] == ["abandoned"] * 3
    assert "signal 9" in a[0]["error"]
    assert r.zscore(f"rq:failed:{Q}", job_id) is not None
    (entry,) = [f for _i, f in r.xrange(f"rq:results:{job_id}")]  # type: ignore[union-attr]
    assert entry[b"type"] == b"2" and "died" in (codec.decode_exc_string(entry[b"exc_string"]) or "")
    assert r.llen(f"rq:queue:{Q}") == 0 and r.zcard(f"rq:wip:{Q}") == 0


def test_recover_expired_only_takes_dead_workers_jobs(r: redis.Redis, settings: Settings) -> None:
    ids = _enqueue(r, settings, 3)
    past = time.time() - 5
    _claim(r, 1, worker="alive", deadline=past)
    _claim(r, 1, worker="dead", deadline=past)
    _claim(r, 1, worker="dead-not-yet", deadline=time.time() + 60)
    r.hset("rq:worker:alive", "state", "busy")
    r.rpush("slimyq:claim:gone", "x-claimed")
    r.hset("rq:job:x-claimed", mapping={"status": "queued", "data": b"x"})
    r.sadd(f"slimyq:claims:{Q}", "gone", "alive")
    recovered = presence.recover_expired(r, settings, Q)
    assert sorted(recovered) == sorted([ids[1], "x-claimed"])
    assert r.hget(f"rq:job:{ids[1]}", "status") == b"queued"
    a = json.loads(r.hget(f"rq:job:{ids[1]}", "slimyq_attempts"))  # type: ignore[arg-type]
    assert [x["outcome"] for x in a] == ["abandoned"]
    assert r.hget(f"rq:job:{ids[0]}", "status") == b"started"  # its worker still heartbeats
    assert r.hget(f"rq:job:{ids[2]}", "status") == b"started"  # deadline not reached
    assert r.exists("slimyq:claim:gone") == 0 and r.sismember(f"slimyq:claims:{Q}", "gone") == 0
    assert r.sismember(f"slimyq:claims:{Q}", "alive") == 1


def test_recover_expired_passes_over_a_job_key_that_is_not_a_hash(r: redis.Redis, settings: Settings) -> None:
    """A started-registry member whose job key is a string (written by anything) must not stop the
    recovery of the dead worker's other jobs (WRONGTYPE from HGET used to abort the whole script)."""
    (job_id,) = _enqueue(r, settings, 1)
    past = time.time() - 5
    _claim(r, 1, worker="dead", deadline=past)
    r.set("rq:job:odd", "not a hash")
    r.zadd(f"rq:wip:{Q}", {"odd:e1": past - 1})
    assert presence.recover_expired(r, settings, Q) == [job_id]
    assert r.hget(f"rq:job:{job_id}", "status") == b"queued"
    assert r.zscore(f"rq:wip:{Q}", "odd:e1") is None  # the odd member is gone, its key untouched
    assert r.get("rq:job:odd") == b"not a hash"


def test_release_members_puts_back_only_orphans(r: redis.Redis, settings: Settings) -> None:
    _enqueue(r, settings, 2)
    _, (kept, orphan) = _claim(r, 2)
    member = f"{orphan.id}:{orphan.execution_id}"
    assert presence.release_members(r, settings, Q, W, [member]) == [orphan.id]
    assert r.hget(f"rq:job:{orphan.id}", "status") == b"queued"
    assert r.hget(f"rq:job:{kept.id}", "status") == b"started"
    assert _members(r, f"rq:wip:{Q}") == {f"{kept.id}:{kept.execution_id}"}
    assert r.smembers(f"rq:worker:{W}:executions") == {f"{kept.id}:{kept.execution_id}".encode()}


@pytest.mark.parametrize("ok", [True, False], ids=["finished", "failed"])
def test_retention_keeps_exactly_the_configured_count(r: redis.Redis, settings: Settings, ok: bool) -> None:
    qs = QueueSettings(concurrency=1, timeout=10, attempts=1, keep_finished=3, keep_failed=4)
    _enqueue(r, settings, 10)
    _, jobs = _claim(r, 10)
    for job in jobs:  # one completion per batch, as a busy worker would
        result = _ok() if ok else Result(ok=False, error_type="x", error="boom", permanent=True, ended=time.time())
        assert _complete(r, [(job, result)], qs) == [1]
    registry_key = f"rq:{'finished' if ok else 'failed'}:{Q}"
    keep = 3 if ok else 4
    assert r.zcard(registry_key) == keep
    kept = _members(r, registry_key)
    trimmed = [j.id for j in jobs if j.id not in kept]
    assert len(trimmed) == 10 - keep
    assert kept == {j.id for j in jobs[-keep:]}
    # Readable for the trim grace (30 s): listed to go then, and deleted by the next purge after it.
    due = dict(r.zrange(f"slimyq:trimmed:{Q}", 0, -1, withscores=True))  # type: ignore[arg-type]
    assert sorted(i.decode() for i in due) == sorted(trimmed)
    assert all(time.time() + 25 < score <= time.time() + 31 for score in due.values())
    assert r.exists(*(f"rq:job:{i}" for i in trimmed)) == len(trimmed)
    assert _beat(r, time.time() + 10) == [] and r.zcard(f"slimyq:trimmed:{Q}") == len(trimmed)
    _beat(r, time.time() + 31)
    assert r.exists(*(f"rq:job:{i}" for i in trimmed), *(f"rq:results:{i}" for i in trimmed)) == 0
    assert r.zcard(f"slimyq:trimmed:{Q}") == 0
    assert r.exists(*(f"rq:job:{i}" for i in kept)) == keep


def _beat(r: redis.Redis, now: float, *members: str) -> Any:
    """W's heartbeat, as of ``now``."""
    return Scripts(r).heartbeat(args=[Q, W, 20, codec.rq_now(), "busy", int(now + 20), 60, f"{now:.6f}", 0,
                                      *members])


def test_a_trimmed_id_claimed_or_requeued_again_is_not_purged(r: redis.Redis, settings: Settings) -> None:
    """A trimmed job enqueued again under its id (RQ clients may reuse ids) and claimed, or put
    back by ``job requeue``, within the grace is no longer the trimmed job: the purge leaves it."""
    from slimyq.inspect import ops

    qs = QueueSettings(concurrency=1, timeout=10, attempts=1, keep_finished=0)
    a, b = _enqueue(r, settings, 2)
    _, jobs = _claim(r, 2)
    assert _complete(r, [(job, _ok()) for job in jobs], qs) == [1, 1]
    assert r.zcard(f"slimyq:trimmed:{Q}") == 2 and r.zcard(f"rq:finished:{Q}") == 0
    r.hset(f"rq:job:{a}", "status", "queued")  # what an RQ client's enqueue under the same id writes
    r.rpush(f"rq:queue:{Q}", a)
    _, (again,) = _claim(r, 1)
    assert again.id == a
    assert [d.outcome for d in ops.requeue(r, settings, [b])] == ["requeued"]
    assert r.zcard(f"slimyq:trimmed:{Q}") == 0
    _beat(r, time.time() + 31)
    assert r.hget(f"rq:job:{a}", "status") == b"started" and r.hget(f"rq:job:{b}", "status") == b"queued"


def test_a_trimmed_set_of_another_type_is_replaced(r: redis.Redis, settings: Settings) -> None:
    """``slimyq:trimmed:<queue>`` written by hand as a string: claims, completions, heartbeats and
    requeues go on (the set is made anew)."""
    from slimyq.inspect import ops

    qs = QueueSettings(concurrency=1, timeout=10, attempts=1, keep_finished=0)
    a, b = _enqueue(r, settings, 2)
    r.set(f"slimyq:trimmed:{Q}", "not a set")
    _, (job,) = _claim(r, 1)
    r.set(f"slimyq:trimmed:{Q}", "not a set")
    assert _complete(r, [(job, _ok())], qs) == [1]
    assert r.zrange(f"slimyq:trimmed:{Q}", 0, -1) == [a.encode()]
    r.set(f"slimyq:trimmed:{Q}", "not a set")
    assert _beat(r, time.time()) == []
    r.set(f"slimyq:trimmed:{Q}", "not a set")
    assert [d.outcome for d in ops.requeue(r, settings, [a])] == ["requeued"]
    _, jobs = _claim(r, 2)
    assert sorted(j.id for j in jobs) == sorted([a, b])


def test_claim_skips_canceled_and_missing_but_refuses_dataless(r: redis.Redis, settings: Settings) -> None:
    a, b = _enqueue(r, settings, 2)
    r.hset(f"rq:job:{a}", "status", "canceled")
    r.rpush(f"rq:queue:{Q}", "no-such-job")
    r.hset("rq:job:dataless", "status", "queued")
    r.rpush(f"rq:queue:{Q}", "dataless")
    _, jobs = _claim(r, 10)
    assert [j.id for j in jobs] == [b, "dataless"]
    assert r.llen(f"rq:queue:{Q}") == 0


def test_claim_on_a_paused_queue_returns_the_claim_list_to_the_front(r: redis.Redis, settings: Settings) -> None:
    ids = _enqueue(r, settings, 4)
    r.lmove(f"rq:queue:{Q}", f"slimyq:claim:{W}", "LEFT", "RIGHT")  # what a BLMOVE would have done
    r.lmove(f"rq:queue:{Q}", f"slimyq:claim:{W}", "LEFT", "RIGHT")
    r.set(f"slimyq:paused:{Q}", 1)
    paused, jobs = _claim(r, 2)
    assert (paused, jobs) == (1, [])
    assert r.llen(f"slimyq:claim:{W}") == 0
    assert [i.decode() for i in r.lrange(f"rq:queue:{Q}", 0, -1)] == ids  # type: ignore[union-attr]


def test_only_a_claim_that_finds_nothing_registers_the_claim_list(r: redis.Redis, settings: Settings) -> None:
    """The worker BLMOVEs into its claim list only after a claim that found nothing: that claim
    (re)registers the list in the queue's claim set, so a worker dying in the BLMOVE has it found."""
    _enqueue(r, settings, 2)
    _, jobs = _claim(r, 1)
    assert len(jobs) == 1 and not r.sismember(f"slimyq:claims:{Q}", W)
    _, jobs = _claim(r, 5)
    assert len(jobs) == 1 and not r.sismember(f"slimyq:claims:{Q}", W)
    _, jobs = _claim(r, 5)
    assert jobs == [] and r.sismember(f"slimyq:claims:{Q}", W)


def test_the_claim_list_is_read_only_when_the_worker_says_it_may_hold_ids(r: redis.Redis, settings: Settings) -> None:
    first, second = _enqueue(r, settings, 2)
    r.lmove(f"rq:queue:{Q}", f"slimyq:claim:{W}", "LEFT", "RIGHT")  # what a BLMOVE would have done
    now = time.time()
    args: list[Any] = [Q, W, 1, f"{now:.6f}", codec.rq_now(), int(now + 60), 0, 60]
    reply: Any = Scripts(r).claim(args=[*args, 0, "e1"])  # no BLMOVE since the last claim: queue only
    assert [row[0].decode() for row in reply[1:]] == [second]
    reply = Scripts(r).claim(args=[*args, 1, "e2"])  # after a BLMOVE: its id first
    assert [row[0].decode() for row in reply[1:]] == [first] and r.llen(f"slimyq:claim:{W}") == 0


def test_a_claim_list_longer_than_the_claim_goes_back_to_the_front_of_the_queue(r: redis.Redis,
                                                                              settings: Settings) -> None:
    """A BLMOVE that redis-py sent again after a lost reply leaves two ids in the claim list; a
    claim of one takes the first and puts the other back at the front of the queue (the worker
    reads its claim list only after a BLMOVE, so it would wait there behind newer jobs)."""
    ids = _enqueue(r, settings, 4)
    for _ in range(2):
        r.lmove(f"rq:queue:{Q}", f"slimyq:claim:{W}", "LEFT", "RIGHT")
    now = time.time()
    reply: Any = Scripts(r).claim(args=[Q, W, 1, f"{now:.6f}", codec.rq_now(), int(now + 60), 0, 60, 1, "e1"])
    assert [row[0].decode() for row in reply[1:]] == [ids[0]] and r.llen(f"slimyq:claim:{W}") == 0
    assert [i.decode() for i in r.lrange(f"rq:queue:{Q}", 0, -1)] == ids[1:]  # type: ignore[union-attr]


def test_complete_repeated_with_its_token_writes_nothing_twice(r: redis.Redis, settings: Settings) -> None:
    """redis-py repeats a command whose reply was lost: the repeat answers as the first call did."""
    from slimyq.runtime import metrics

    qs = settings.queue(Q)
    _enqueue(r, settings, 1)
    _, (job,) = _claim(r, 1)
    c = decide(job, _ok(), qs, W)
    stats = metrics.increments(Q, [c.ended])
    args: list[Any] = [Q, W, int(time.time()), codec.rq_now(), qs.keep_finished, qs.keep_failed, 30, 1,
                       len(stats), "token-1", *c.args]
    for stat in stats:
        args.extend(stat)
    assert Scripts(r).complete(args=args) == [1]
    assert Scripts(r).complete(args=args) == [1]  # same answer: the history row is still written
    assert r.hget(f"slimyq:counts:{Q}", "*:completed") == b"1"
    assert len(r.xrange(f"rq:results:{job.id}")) == 1  # type: ignore[arg-type]


def test_release_puts_jobs_back_in_queue_order(r: redis.Redis, settings: Settings) -> None:
    ids = _enqueue(r, settings, 6)
    now = time.time()
    eids = [f"{i:014x}aa" for i in (5, 1, 9, 3)]  # ascending = claim order, whatever the set order
    reply: Any = Scripts(r).claim(args=[Q, W, 4, f"{now:.6f}", codec.rq_now(), int(now + 60), 0, 60, 1,
                                        *sorted(eids)])
    assert len(reply) == 5
    presence.release(r, settings, Q, W)
    assert [i.decode() for i in r.lrange(f"rq:queue:{Q}", 0, -1)] == ids  # type: ignore[union-attr]


def test_recover_trims_the_failed_registry(r: redis.Redis) -> None:
    s = Settings(queues={"database": QueueSettings(concurrency=1, timeout=10, attempts=1, keep_failed=2)})
    ids = _enqueue(r, s, 4)
    _claim(r, 4)
    assert sorted(presence.recover_dead(r, s, Q, W, "SIGKILL")) == sorted(ids)
    assert r.zcard(f"rq:failed:{Q}") == 2
    # the two trimmed wait out the grace in the trimmed set, like COMPLETE's (then a beat deletes them)
    trimmed = [i.decode() for i in r.zrange(f"slimyq:trimmed:{Q}", 0, -1)]  # type: ignore[union-attr]
    assert len(trimmed) == 2 and set(trimmed) <= set(ids) and r.exists(*(f"rq:job:{i}" for i in trimmed)) == 2
    _beat(r, time.time() + 31)
    assert r.exists(*(f"rq:job:{i}" for i in trimmed)) == 0 and r.zcard(f"rq:failed:{Q}") == 2


def test_recover_trim_never_touches_failures_kept_forever(r: redis.Redis) -> None:
    """failure_ttl -1 failures (registry score +inf) are never trimmed, by COMPLETE or RECOVER."""
    s = Settings(queues={"database": QueueSettings(concurrency=1, timeout=10, attempts=1, keep_failed=2)})
    forever = [f"forever-{i}" for i in range(3)]
    for job_id in forever:
        r.hset(f"rq:job:{job_id}", "status", "failed")
        r.zadd(f"rq:failed:{Q}", {job_id: "+inf"})
    ids = _enqueue(r, s, 4)
    _claim(r, 4)
    assert sorted(presence.recover_dead(r, s, Q, W, "SIGKILL")) == sorted(ids)
    assert all(r.zscore(f"rq:failed:{Q}", job_id) == float("inf") for job_id in forever)
    assert all(r.ttl(f"rq:job:{job_id}") == -1 for job_id in forever)
    assert r.zcount(f"rq:failed:{Q}", "-inf", "(+inf") == 2


@pytest.mark.parametrize("ttl", [-1, 0, 50])
def test_recover_failure_keeps_the_jobs_own_failure_ttl(r: redis.Redis, ttl: int) -> None:
    s = Settings(queues={"database": QueueSettings(concurrency=1, timeout=10, attempts=1)})
    (job_id,) = _enqueue(r, s, 1)
    r.hset(f"rq:job:{job_id}", "failure_ttl", ttl)
    _claim(r, 1)
    assert presence.recover_dead(r, s, Q, W, "SIGKILL") == [job_id]
    score = r.zscore(f"rq:failed:{Q}", job_id)
    if ttl == -1:
        assert score == float("inf") and r.ttl(f"rq:job:{job_id}") == -1 and r.ttl(f"rq:results:{job_id}") == -1
    elif ttl == 0:
        assert score is None and not r.exists(f"rq:job:{job_id}")
    else:
        assert score is not None and 0 < r.ttl(f"rq:job:{job_id}") <= 50


def test_execution_records_live_from_claim_to_completion(r: redis.Redis, settings: Settings) -> None:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    qs = settings.queue(Q)
    (job_id,) = _enqueue(r, settings, 1)
    r.hset(f"rq:job:{job_id}", "ended_at", "2020-01-01T00:00:00.000000Z")  # a previous attempt's end
    _, (job,) = _claim(r, 1)
    assert r.hget(f"rq:job:{job_id}", "ended_at") == b""
    (execution,) = Job.fetch(job_id, connection=r, serializer=JSONSerializer).get_executions()
    assert (execution.id, execution.worker_name) == (job.execution_id, W)
    # Its TTL is the heartbeat's to set (the claim writes the batch's records without one).
    assert r.ttl(execution.key) == -1
    assert _beat(r, time.time(), job.member) == [] and 0 < int(r.ttl(execution.key)) <= 60  # type: ignore[arg-type]
    started = time.time() - 2
    result = Result(ok=True, value={"success": True}, started=started, ended=started + 1.5)
    assert _complete(r, [(job, result)], qs) == [1]
    assert not r.exists(execution.key, f"rq:executions:{job_id}")
    assert not r.sismember(f"rq:worker:{W}:executions", job.member)
    done = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert done.started_at is not None and abs(done.started_at.timestamp() - started) < 0.01
    assert done.ended_at is not None and abs(done.ended_at.timestamp() - (started + 1.5)) < 0.01


def test_complete_after_a_cancel_discards_the_result_and_the_record(r: redis.Redis, settings: Settings) -> None:
    qs = settings.queue(Q)
    (job_id,) = _enqueue(r, settings, 1)
    _, (job,) = _claim(r, 1)
    r.hset(f"rq:job:{job_id}", "status", "canceled")  # RQ's cancel, its wip entry left behind
    assert _complete(r, [(job, _ok())], qs) == [0]
    assert r.hget(f"rq:job:{job_id}", "status") == b"canceled"
    assert r.zscore(f"rq:finished:{Q}", job_id) is None and not r.exists(f"rq:results:{job_id}")
    assert not r.exists(f"rq:execution:{job.member}") and not r.exists(f"rq:executions:{job_id}")


@pytest.mark.parametrize(("ttl", "kept"), [(-1, "forever"), (0, "not at all"), (50, "50 s")])
def test_result_ttl_meanings(r: redis.Redis, settings: Settings, ttl: int, kept: str) -> None:
    qs = QueueSettings(concurrency=1, timeout=10, attempts=1, keep_finished=1, keep_failed=1)
    ids = _enqueue(r, settings, 3)
    for job_id in ids:
        r.hset(f"rq:job:{job_id}", "result_ttl", ttl)
    _, jobs = _claim(r, 3)
    assert _complete(r, [(j, _ok()) for j in jobs], qs) == [1, 1, 1]
    if kept == "forever":  # never trimmed by keep_finished, no expiry
        assert _members(r, f"rq:finished:{Q}") == set(ids)
        assert all(r.ttl(f"rq:job:{i}") == -1 and r.ttl(f"rq:results:{i}") == -1 for i in ids)
    elif kept == "not at all":
        assert r.zcard(f"rq:finished:{Q}") == 0 and not any(r.exists(f"rq:job:{i}") for i in ids)
    else:
        assert r.zcard(f"rq:finished:{Q}") == 1  # trimmed to keep_finished
        assert 0 < int(r.ttl(f"rq:job:{ids[-1]}")) <= 50  # type: ignore[arg-type]


def test_stopped_outcome(r: redis.Redis, settings: Settings) -> None:
    qs = settings.queue(Q)
    (job_id,) = _enqueue(r, settings, 1)
    _, (job,) = _claim(r, 1)
    result = Result(ok=False, error_type="stopped", error="stopped on request", stopped=True, permanent=True,
                    ended=time.time())
    assert decide(job, result, qs, W).label == "stopped"
    assert _complete(r, [(job, result)], qs) == [1]
    assert r.hget(f"rq:job:{job_id}", "status") == b"stopped"
    assert r.zscore(f"rq:failed:{Q}", job_id) is not None
    (entry,) = [f for _, f in r.xrange(f"rq:results:{job_id}")]  # type: ignore[union-attr]
    assert entry[b"type"] == b"3"  # RQ's Result.Type.STOPPED


def test_heartbeat_does_not_report_a_canceled_job_as_taken_over(r: redis.Redis, settings: Settings) -> None:
    """RQ's Job.cancel() removes the execution from the started registry; the heartbeat must not
    take that for a recovery by another worker (which stops the attempt): a cancel that lands
    mid-run lets the attempt run to its end (README, RQ compatibility)."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    (job_id,) = _enqueue(r, settings, 1)
    _, (job,) = _claim(r, 1)
    Job.fetch(job_id, connection=r, serializer=JSONSerializer).cancel()
    assert r.zscore(f"rq:wip:{Q}", job.member) is None
    assert _beat(r, time.time(), job.member) == []
    # The attempt's end: its result is discarded and the execution record RQ's cancel left removed.
    assert _complete(r, [(job, _ok())], settings.queue(Q)) == [0]
    assert r.hget(f"rq:job:{job_id}", "status") == b"canceled"
    assert not r.exists(f"rq:execution:{job.member}")


def test_the_purge_leaves_an_id_enqueued_again_after_its_trim(r: redis.Redis, settings: Settings) -> None:
    """A trimmed job deleted (``job delete``, or its own short TTL) and its id enqueued again within
    the grace: the purge finds a queued job, not the one it listed, and leaves it."""
    qs = QueueSettings(concurrency=1, timeout=10, attempts=1, keep_finished=0)
    a, b = _enqueue(r, settings, 2)
    _, jobs = _claim(r, 2)
    assert _complete(r, [(job, _ok()) for job in jobs], qs) == [1, 1]
    r.delete(f"rq:job:{a}", f"rq:results:{a}")
    r.hset(f"rq:job:{a}", mapping={"status": "scheduled", "origin": Q})  # enqueued again, for later
    r.hset(f"rq:job:{b}", "data", "x")  # still the finished job b
    _beat(r, time.time() + 31)
    assert r.hget(f"rq:job:{a}", "status") == b"scheduled" and not r.exists(f"rq:job:{b}")
    assert r.zcard(f"slimyq:trimmed:{Q}") == 0


def test_a_registry_or_metrics_key_of_another_type_does_not_fail_the_batch(r: redis.Redis,
                                                                          settings: Settings) -> None:
    qs = settings.queue(Q)
    ids = _enqueue(r, settings, 2)
    _, jobs = _claim(r, 2)
    r.set(f"rq:finished:{Q}", "not a zset")
    stats_key = f"slimyq:counts:{Q}"
    r.set(stats_key, "not a hash")
    args: list[Any] = [Q, W, int(time.time()), codec.rq_now(), qs.keep_finished, qs.keep_failed, 30,
                       2, 1, os.urandom(8).hex()]
    for job in jobs:
        args.extend(decide(job, _ok(), qs, W).args)
    args += [stats_key, "completed", "i", "2"]
    assert [int(x) for x in Scripts(r).complete(args=args)] == [1, 1]
    assert sorted(i.decode() for i in r.zrange(f"rq:finished:{Q}", 0, -1)) == sorted(ids)
    assert r.zcard(f"rq:wip:{Q}") == 0 and r.get(stats_key) == b"not a hash"


def test_a_queue_or_schedule_of_another_type_does_not_strand_the_batch(r: redis.Redis,
                                                                        settings: Settings) -> None:
    """A retry's LPUSH or ZADD into a key written by hand as a string: the key is replaced, so the
    script never fails half way (what a failed script wrote stays: its jobs would be stale on any
    rewrite, one ended in no registry, the other neither queued nor scheduled)."""
    s = Settings(queues={"database": QueueSettings(concurrency=1, timeout=10, attempts=3)})
    _enqueue(r, s, 2)
    _, (a, b) = _claim(r, 2)
    r.set(f"rq:queue:{Q}", "not a list")
    r.set(f"rq:scheduled:{Q}", "not a zset")
    retry = Result(ok=False, error_type="x", error="boom", ended=time.time())
    assert _complete(r, [(a, _ok()), (b, retry)], s.queue(Q)) == [1, 1]
    assert r.zscore(f"rq:finished:{Q}", a.id) is not None
    assert r.zscore(f"rq:scheduled:{Q}", b.id) is not None or r.lrange(f"rq:queue:{Q}", 0, -1) == [b.id.encode()]
    assert r.zcard(f"rq:wip:{Q}") == 0 and not r.exists(f"rq:worker:{W}:executions")


def test_jobs_retried_at_once_go_back_to_the_front_in_the_order_given(r: redis.Redis, settings: Settings) -> None:
    """A rolled-back batch's jobs (no delay: the database is fine) are put back ahead of the queue,
    in claim order, so they run again in the order they came."""
    qs = settings.queue(Q)
    ids = _enqueue(r, settings, 5)
    _, jobs = _claim(r, 3)
    assert [job.id for job in jobs] == ids[:3]
    rolled = Result(ok=False, error_type=codec.BATCH_ROLLED_BACK, error="rolled back", infra=True, ended=time.time())
    assert _complete(r, [(job, rolled) for job in jobs], qs) == [1, 1, 1]
    assert [i.decode() for i in r.lrange(f"rq:queue:{Q}", 0, -1)] == ids  # type: ignore[union-attr]
    assert {r.hget(f"rq:job:{i}", "status") for i in ids[:3]} == {b"queued"}
