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
SWEEP_MAX = 1000  # deferred jobs looked at per sweep (the next window; the sweeps go round)
MAX_PARENTS = 1000  # a job with more dependencies is left to RQ's own tools
SWEEP_PARENTS = 10_000  # parent statuses looked up per sweep (at most)


def _key(job_id: str) -> bytes:
    return b"rq:job:" + codec.wire(job_id)


def _dependency_ids(raw: bytes) -> list[str]:
    """The job hash's ``dependency_ids`` (RQ writes a JSON list); unreadable: none."""
    try:
        ids = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


_ENDED = b"slimyq:ended:"  # how a job kept for result_ttl=0 ended, when it had dependents (COMPLETE)


def _statuses(conn: redis.Redis, parents: list[str]) -> dict[str, bytes | None]:
    """Each parent's status: its hash's, or for a ``result_ttl=0`` job (deleted as it ended) the
    one COMPLETE left under ``slimyq:ended:<id>``; None when neither is there."""
    pipe = conn.pipeline(transaction=False)
    for parent in parents:
        pipe.hget(_key(parent), "status")
        pipe.get(_ENDED + codec.wire(parent))
    replies = [None if isinstance(r, Exception) else r for r in pipe.execute(raise_on_error=False)]
    return {p: replies[2 * i] or replies[2 * i + 1] for i, p in enumerate(parents)}


def _accepted(allow: object) -> set[bytes | None]:
    """The parent statuses that let a dependent run: finished; for a dependent that allows
    failure, failed too, or a parent whose hash is gone (however it ended, it ended: RQ's own
    check skips it as well). A strict dependent of a vanished parent stays deferred: it may have
    failed."""
    return {b"finished", b"failed", None} if allow not in (None, b"", b"0") else {b"finished"}


def enqueue_dependents(conn: redis.Redis, parents: list[tuple[str, str]], queue: str | None = None) -> None:
    """Enqueue the dependents of jobs that just ended (``(job id, status)`` pairs), with RQ's own
    rules (``Queue.enqueue_dependents``: every dependency finished, or failed where the dependent
    has ``allow_failure``; canceled dependents stay). The parent's status is the one given, not
    re-read: a job kept for ``result_ttl=0`` is deleted as it ends, and its dependents are still
    enqueued (RQ's worker does the same from the job in memory). What this misses, the sweep
    picks up."""
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    for job_id, status in parents:
        try:
            try:
                job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
            except NoSuchJobError:
                if queue is None:
                    raise
                job = Job(id=job_id, connection=conn, serializer=JSONSerializer)
                job.origin = queue
            job._status = JobStatus(status)  # what was just written (refresh_job_status=False reads this)
            Queue(job.origin, connection=conn, serializer=JSONSerializer).enqueue_dependents(
                job, refresh_job_status=False)
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
    failed = [(job_id, "failed") for job_id, state, has in zip(ids, replies[::2], replies[1::2], strict=True)
              if state == b"failed" and has]
    if failed:
        enqueue_dependents(conn, failed)


class DeferredSweep:
    """Enqueue a queue's deferred jobs whose dependencies have all ended (finished, or failed
    where the job allows failure). A job is enqueued only when two sweeps of its window in a row
    found it ready, so the completer, which does the same within milliseconds of an outcome, is
    never raced: the sweep only ever acts on what was left behind. A dependency whose hash is
    gone counts by how COMPLETE said it ended (``slimyq:ended:<id>``, a ``result_ttl=0`` job), or
    else as ended for a dependent that allows failure only (:func:`_accepted`), and a job the
    sweep cannot read is skipped, never stopping the sweep for the rest."""

    def __init__(self, conn: redis.Redis, queue: str) -> None:
        self.conn = conn
        self.queue = queue
        self._ready: set[str] = set()  # found ready by the previous sweep of their window
        self._offset = 0  # where the next window of the deferred registry starts

    def run(self) -> list[str]:
        """One sweep; returns the ids enqueued."""
        from rq.registry import ReadyJobRegistry
        from rq.serializers import JSONSerializer

        ReadyJobRegistry(self.queue, connection=self.conn, serializer=JSONSerializer).cleanup()
        seen, ready = self._ready_now()
        due = sorted(ready & self._ready)
        self._ready = (self._ready - seen) | (ready - set(due))
        moved = [job_id for job_id in due if self._move_safely(job_id)]
        if not moved:
            return []
        registry = ReadyJobRegistry(self.queue, connection=self.conn, serializer=JSONSerializer)
        return [job.id for job in registry.enqueue_jobs(moved)]

    def _window(self) -> list[str]:
        """The next ``SWEEP_MAX`` deferred ids; after the last window, the first again."""
        raw: Any = self.conn.zrange(keys.deferred(self.queue), self._offset, self._offset + SWEEP_MAX - 1)
        if not raw and self._offset:
            self._offset = 0
            raw = self.conn.zrange(keys.deferred(self.queue), 0, SWEEP_MAX - 1)
        return [codec.text_id(r) for r in raw]

    def _ready_now(self) -> tuple[set[str], set[str]]:
        """The deferred ids looked at, and those whose dependencies have all ended acceptably:
        three round trips, two of them pipelined."""
        ids = self._window()
        if not ids:
            return set(), set()
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(_key(job_id), "status", "allow_dependency_failures", "dependency_ids")
        jobs: list[tuple[str, object, list[str]]] = []
        looked, budget = 0, SWEEP_PARENTS
        for job_id, reply in zip(ids, pipe.execute(raise_on_error=False), strict=True):
            if budget <= 0:
                break
            looked += 1
            try:
                if isinstance(reply, Exception):
                    continue  # not a hash: nothing RQ can run
                state, allow, deps = reply
                if state != b"deferred" or not deps:
                    continue
                parents = _dependency_ids(deps)
                if not parents or len(parents) > MAX_PARENTS:
                    continue
                for parent in parents:
                    _key(parent)  # an id with no bytes (a lone surrogate) raises here
                jobs.append((job_id, allow, parents))
                budget -= len(parents)
            except Exception as exc:
                log.debug("deferred sweep: skipping %s: %r", codec.printable(job_id), exc)
        # The next window starts after the last id looked at.
        self._offset = 0 if looked == len(ids) and len(ids) < SWEEP_MAX else self._offset + looked
        seen = set(ids[:looked])
        parents = sorted({d for _, _, deps in jobs for d in deps})
        state = _statuses(self.conn, parents)
        ready = {job_id for job_id, allow, deps in jobs
                 if all(state[d] in _accepted(allow) for d in deps)}
        return seen, ready

    def _move_safely(self, job_id: str) -> bool:
        try:
            return self._move_to_ready(job_id)
        except redis.ConnectionError:
            raise
        except Exception as exc:
            log.debug("deferred sweep: could not move %s: %r", codec.printable(job_id), exc)
            return False

    def _move_to_ready(self, job_id: str) -> bool:
        """Deferred to RQ's ready registry, in one watched transaction that re-checks the rules
        and takes the job out of its parents' ``:dependents`` sets: an ``enqueue_dependents`` of
        RQ's own running meanwhile fails its WATCH and, reading again, no longer finds it, so
        the job is enqueued once."""
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
        parents = [p for p in job._dependency_ids if isinstance(p, str)]
        if not parents or len(parents) > MAX_PARENTS:
            return False
        registry = ReadyJobRegistry(job.origin, connection=self.conn, serializer=JSONSerializer)
        parent_keys = [_key(p) for p in parents]
        dependents_keys = [k + b":dependents" for k in parent_keys]
        with self.conn.pipeline() as pipe:
            try:
                pipe.watch(job.key, *parent_keys, *dependents_keys)  # type: ignore[no-untyped-call]
                state: Any = pipe.hmget(job.key, "status", "allow_dependency_failures")
                if state[0] != b"deferred":
                    return False
                accepted = _accepted(state[1])
                for parent, key in zip(parents, parent_keys, strict=True):
                    ended = pipe.hget(key, "status")
                    if ended is None:
                        ended = pipe.get(_ENDED + codec.wire(parent))
                    if ended not in accepted:  # gone, or not ended as allowed
                        return False
                pipe.multi()
                registry.register_jobs([job], pipeline=pipe)
                for key in dependents_keys:
                    pipe.srem(key, job.id)
                pipe.execute()
            except redis.WatchError:
                return False  # it changed meanwhile: the next sweep looks again
        return True
