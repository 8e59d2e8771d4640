"""Dependents (RQ's ``depends_on``): enqueued when their dependencies end, by RQ's own rules.

Three ways a dependent gets out of ``rq:deferred:<queue>``:

- the completer, right after the parent's outcome is written (``enqueue_dependents``);
- recovery, for a job it failed (its worker died or lapsed with no retries left): its
  ``allow_failure`` dependents are due too (``after_recovery``);
- the heartbeat thread's slow sweep (``DeferredSweep``), for what the other two never got to
  (the process died between writing an outcome and enqueuing the dependents, or Redis failed
  in between). It also runs RQ's ``ReadyJobRegistry.cleanup`` for dependents RQ's own code moved
  to ready but never pushed.

All of it is RQ's code path (``Queue.enqueue_dependents``, ``Job.dependencies_are_met``,
``ReadyJobRegistry``): rare, so not Lua.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from slimyq.runtime import codec, keys

log = logging.getLogger("slimyq.worker")

SWEEP_EVERY = 60.0  # seconds between sweeps of a queue's deferred registry (at most)
SWEEP_BEATS = 12  # ... and at most this many heartbeats
SWEEP_MAX = 1000  # deferred jobs looked at per sweep (the oldest)


def _key(job_id: str) -> bytes:
    return b"rq:job:" + codec.wire(job_id)


def _dependency_ids(raw: bytes) -> list[str]:
    """The job hash's ``dependency_ids`` (RQ writes a JSON list); unreadable: none."""
    try:
        ids = json.loads(raw)
    except ValueError:
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def enqueue_dependents(conn: redis.Redis, parent_ids: list[str]) -> None:
    """Enqueue the dependents of jobs that just ended, with RQ's own rules
    (``Queue.enqueue_dependents``: every dependency finished, or failed where the dependent has
    ``allow_failure``; canceled dependents stay). What this misses, the sweep picks up."""
    from rq import Queue
    from rq.job import Job
    from rq.serializers import JSONSerializer

    for job_id in parent_ids:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            Queue(job.origin, connection=conn, serializer=JSONSerializer).enqueue_dependents(job)
        except Exception as exc:
            log.warning("could not enqueue the dependents of %s (the deferred sweep retries): %s", job_id, exc)


def after_recovery(conn: redis.Redis, ids: list[str]) -> None:
    """Jobs a recovery handled: those it failed, and that have dependents, get them enqueued (an
    ``allow_failure`` dependent runs after its parent's worker died with no retries left)."""
    if not ids:
        return
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(_key(job_id), "status")
        pipe.exists(_key(job_id) + b":dependents")
    try:
        replies = pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not look for the dependents of recovered jobs (the deferred sweep retries): %s", exc)
        return
    failed = [job_id for job_id, state, has in zip(ids, replies[::2], replies[1::2], strict=True)
              if state == b"failed" and has]
    if failed:
        enqueue_dependents(conn, failed)


class DeferredSweep:
    """Enqueue a queue's deferred jobs whose dependencies have all ended (finished, or failed
    where the job allows failure), as RQ decides it. A job is enqueued only when two sweeps in a
    row found it ready, so the completer, which does the same within milliseconds of an outcome,
    is never raced: the sweep only ever acts on what was left behind."""

    def __init__(self, conn: redis.Redis, queue: str) -> None:
        self.conn = conn
        self.queue = queue
        self._ready: set[str] = set()  # found ready by the previous sweep

    def run(self) -> list[str]:
        """One sweep; returns the ids enqueued."""
        from rq.registry import ReadyJobRegistry
        from rq.serializers import JSONSerializer

        ReadyJobRegistry(self.queue, connection=self.conn, serializer=JSONSerializer).cleanup()
        ready = self._ready_now()
        due = sorted(ready & self._ready)
        self._ready = ready - set(due)
        moved = [job_id for job_id in due if self._move_to_ready(job_id)]
        if not moved:
            return []
        registry = ReadyJobRegistry(self.queue, connection=self.conn, serializer=JSONSerializer)
        return [job.id for job in registry.enqueue_jobs(moved)]

    def _ready_now(self) -> set[str]:
        """Deferred ids whose dependencies have all ended acceptably: three round trips, two of them pipelined."""
        raw: Any = self.conn.zrange(keys.deferred(self.queue), 0, SWEEP_MAX - 1)
        ids = [codec.text_id(r) for r in raw]
        if not ids:
            return set()
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(_key(job_id), "status", "allow_dependency_failures", "dependency_ids")
        jobs = []
        for job_id, (state, allow, deps) in zip(ids, pipe.execute(), strict=True):
            if state == b"deferred" and deps:
                parents = _dependency_ids(deps)
                if parents:
                    jobs.append((job_id, allow, parents))
        parents = sorted({d for _, _, deps in jobs for d in deps})
        pipe = self.conn.pipeline(transaction=False)
        for parent in parents:
            pipe.hget(_key(parent), "status")
        state = dict(zip(parents, pipe.execute(), strict=True))
        ready = set()
        for job_id, allow, deps in jobs:
            accepted = {b"finished", b"failed"} if allow not in (None, b"", b"0") else {b"finished"}
            # As RQ's Job.dependencies_are_met: a dependency whose hash is gone does not hold it back.
            if all(state[d] is None or state[d] in accepted for d in deps):
                ready.add(job_id)
        return ready

    def _move_to_ready(self, job_id: str) -> bool:
        """Deferred to RQ's ready registry, in one watched transaction that re-checks the rules."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job
        from rq.registry import ReadyJobRegistry
        from rq.serializers import JSONSerializer

        try:
            job = Job.fetch(job_id, connection=self.conn, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        if job.origin != self.queue:  # RQ's ready registry is per origin queue
            return False
        registry = ReadyJobRegistry(job.origin, connection=self.conn, serializer=JSONSerializer)
        with self.conn.pipeline() as pipe:
            try:
                pipe.watch(job.key)  # type: ignore[no-untyped-call]
                if pipe.hget(job.key, "status") != b"deferred" or not job.dependencies_are_met(pipeline=pipe):
                    return False
                pipe.multi()
                registry.register_jobs([job], pipeline=pipe)
                pipe.execute()
            except redis.WatchError:
                return False  # it changed meanwhile: the next sweep looks again
        return True
