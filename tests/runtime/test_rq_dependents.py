"""Dependents (RQ's ``depends_on``) never stay deferred for good: a parent failed by crash
recovery releases its ``allow_failure`` dependents, and a process that dies between writing an
outcome and enqueuing the dependents leaves them to the deferred sweep. rq's own library is the
client; the workers are real processes."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from harness import Env, WorkerProc, attempts, leftovers, status, wait_until
from rq import Queue
from rq.job import Dependency, Job
from rq.serializers import JSONSerializer

CANARY = "slimyq.jobs.canary.canary"


def _canary(q: Queue, sleep: float = 0.0, **options: object) -> Job:
    return q.enqueue(CANARY, kwargs={"sleepSeconds": sleep, "failTimes": 0}, **options)  # type: ignore[arg-type]


def test_parent_failed_by_recovery_releases_its_allow_failure_dependents(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    env.reconfigure(queues={"database": {"attempts": 1}})
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q, sleep=60)
    tolerant = _canary(q, depends_on=Dependency(jobs=[parent], allow_failure=True))
    strict = _canary(q, depends_on=parent)
    worker = start("database")
    (child,) = worker.wait_children(1)
    wait_until(lambda: status(conn, parent.id) == "started", 30, what="the parent to start")
    child.send_signal(signal.SIGKILL)  # its worker dies with no retries left: recovery fails it
    wait_until(lambda: status(conn, tolerant.id) == "finished", 60, what="the tolerant dependent to run")
    assert status(conn, parent.id) == "failed"
    assert [a["outcome"] for a in attempts(conn, parent.id)] == ["abandoned"]
    assert status(conn, strict.id) == "deferred"
    # Recovery enqueued it, not the sweep that picks up what was left behind.
    assert "dependents.enqueued" not in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def _crash_before_dependents(env: Env, root: Path) -> Path:
    """The worker process dies (once) right after a completion batch was written and before its
    dependents are enqueued: a ``sitecustomize`` on the worker's path replaces that step."""
    marker = root / "crashed"
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import os
        import slimyq.runtime.dependents as dependents

        def enqueue_dependents(conn, parents, queue=None):
            if not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os._exit(9)

        dependents.enqueue_dependents = enqueue_dependents
    """))
    env.extra["PYTHONPATH"] = str(site)
    return marker


@pytest.mark.parametrize("kept", [True, False], ids=["result_ttl-default", "result_ttl-0"])
def test_dependents_left_deferred_by_a_crash_after_completion_are_enqueued_by_the_sweep(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], tmp_path: Path, kept: bool) -> None:
    """Also for a parent kept for no time (deleted as it ended): COMPLETE leaves how it ended
    under ``slimyq:ended:<id>``, so even its strict dependent is enqueued by the sweep."""
    marker = _crash_before_dependents(env, tmp_path)
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q) if kept else _canary(q, result_ttl=0)
    dependent = _canary(q, depends_on=parent)
    tolerant = _canary(q, depends_on=Dependency(jobs=[parent], allow_failure=True))
    worker = start("database")
    wait_until(marker.exists, 60, what="the crash after the parent's completion")
    if kept:
        assert status(conn, parent.id) == "finished"
    else:
        assert not conn.exists(f"rq:job:{parent.id}") and conn.get(f"slimyq:ended:{parent.id}") == b"finished"
    assert status(conn, dependent.id) == "deferred"
    wait_until(lambda: status(conn, dependent.id) == status(conn, tolerant.id) == "finished", 120,
               what="the sweep to enqueue the dependents")
    if kept:
        assert [a["outcome"] for a in attempts(conn, parent.id)] == ["finished"]
    assert [a["outcome"] for a in attempts(conn, dependent.id)] == ["finished"]
    assert "dependents.enqueued" in worker.log()
    assert conn.zcard("rq:deferred:database") == 0 and conn.zcard("rq:ready:database") == 0
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def _sweep_twice(conn: redis.Redis) -> list[str]:
    from slimyq.runtime.dependents import DeferredSweep

    sweep = DeferredSweep(conn, "database")
    return sweep.run() + sweep.run()


def _queued(conn: redis.Redis, job_id: str) -> int:
    return [m.decode() for m in conn.lrange("rq:queue:database", 0, -1)].count(job_id)  # type: ignore[union-attr]


def test_a_swept_dependent_is_taken_out_of_its_parents_dependents_so_rq_never_enqueues_it_again(
        conn: redis.Redis) -> None:
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q)
    tolerant = _canary(q, depends_on=Dependency(jobs=[parent], allow_failure=True))
    conn.lrem("rq:queue:database", 0, parent.id)
    conn.hset(parent.key, "status", "failed")  # its outcome was written, its dependents never enqueued
    assert _sweep_twice(conn) == [tolerant.id]
    assert conn.smembers(parent.dependents_key) == set()
    conn.lrem("rq:queue:database", 0, tolerant.id)
    conn.hset(tolerant.key, "status", "finished")
    conn.hset(parent.key, "status", "finished")  # requeued and finished: RQ enqueues its dependents
    q.enqueue_dependents(Job.fetch(parent.id, connection=conn, serializer=JSONSerializer))
    assert _queued(conn, tolerant.id) == 0
    assert status(conn, tolerant.id) == "finished"


def test_the_sweep_never_moves_a_job_that_is_no_longer_deferred(conn: redis.Redis) -> None:
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q)
    dependent = _canary(q, depends_on=parent)
    conn.lrem("rq:queue:database", 0, parent.id)
    conn.hset(parent.key, "status", "finished")
    conn.hset(dependent.key, "status", "started")  # already on its way, still in the deferred registry
    assert _sweep_twice(conn) == []
    assert status(conn, dependent.id) == "started" and _queued(conn, dependent.id) == 0


def test_a_parent_whose_hash_is_gone_holds_back_a_strict_dependent_only(conn: redis.Redis) -> None:
    """It may have failed: a strict dependent stays deferred; one that allows failure runs (its
    parent ended somehow), and leaves the parent's dependents set."""
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q)
    strict = _canary(q, depends_on=parent)
    tolerant = _canary(q, depends_on=Dependency(jobs=[parent], allow_failure=True))
    conn.lrem("rq:queue:database", 0, parent.id)
    conn.hset(parent.key, "status", "failed")
    conn.delete(parent.key)  # the failed parent's hash expired
    assert _sweep_twice(conn) == [tolerant.id]
    assert status(conn, strict.id) == "deferred" and status(conn, tolerant.id) == "queued"
    assert conn.smembers(f"{parent.key}:dependents") == {strict.id.encode()}


def test_unreadable_deferred_entries_are_skipped_and_every_window_is_reached(
        conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimyq.runtime import dependents

    monkeypatch.setattr(dependents, "SWEEP_MAX", 2)
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q)
    conn.lrem("rq:queue:database", 0, parent.id)
    bad = {"surrogate": '["\\ud800"]', "nested": "[" * 100_000 + "]" * 100_000,
           "many": json.dumps([parent.id] * (dependents.MAX_PARENTS + 1))}
    for name, deps in bad.items():
        conn.hset(f"rq:job:{name}", mapping={"status": "deferred", "dependency_ids": deps, "origin": "database"})
        conn.zadd("rq:deferred:database", {name: 0})
    conn.set("rq:job:string", "not a hash")
    conn.zadd("rq:deferred:database", {"string": 0})
    dependent = _canary(q, depends_on=parent)  # the newest: beyond the first windows
    conn.hset(parent.key, "status", "finished")
    sweep = dependents.DeferredSweep(conn, "database")
    enqueued = [job_id for _ in range(8) for job_id in sweep.run()]
    assert enqueued == [dependent.id]
    assert status(conn, dependent.id) == "queued"
    assert {m.decode() for m in conn.zrange("rq:deferred:database", 0, -1)} == {*bad, "string"}  # type: ignore[union-attr]


def test_a_parent_kept_for_no_time_still_enqueues_its_dependents(
        conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q, result_ttl=0)
    dependent = _canary(q, depends_on=parent)
    worker = start("database")
    wait_until(lambda: status(conn, dependent.id) == "finished", 60, what="the dependent to run")
    assert "dependents.enqueued" not in worker.log()  # the completer enqueued it, not the sweep
    assert conn.zscore("rq:finished:database", parent.id) is None  # kept in no registry
    assert not conn.exists(f"rq:job:{parent.id}")  # nor at all: result_ttl=0 means what it means to RQ
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_a_late_enqueue_dependents_of_rq_leaves_a_swept_dependent_alone(conn: redis.Redis) -> None:
    """The completer stalled between writing the parent's outcome and enqueuing its dependents
    for longer than two sweeps: the dependent, swept and already running, is not touched."""
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    parent = _canary(q)
    dependent = _canary(q, depends_on=parent)
    conn.lrem("rq:queue:database", 0, parent.id)
    conn.hset(parent.key, "status", "finished")
    stalled = conn.pipeline()
    stalled.watch(parent.dependents_key)  # RQ's move_dependents_to_ready, read before the sweep
    assert {m.decode() for m in stalled.smembers(parent.dependents_key)} == {dependent.id}  # type: ignore[union-attr]
    assert _sweep_twice(conn) == [dependent.id]
    stalled.multi()
    stalled.hset(dependent.key, "status", "ready_to_enqueue")
    with pytest.raises(redis.WatchError):  # the sweep changed the set it watched
        stalled.execute()
    stalled.reset()
    conn.lrem("rq:queue:database", 0, dependent.id)
    conn.hset(dependent.key, "status", "started")  # a worker took it
    q.enqueue_dependents(Job.fetch(parent.id, connection=conn, serializer=JSONSerializer))
    assert status(conn, dependent.id) == "started" and _queued(conn, dependent.id) == 0
