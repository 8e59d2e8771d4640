"""A worker's presence in Redis: RQ worker registration, heartbeats, and recovery of abandoned jobs.

Registration uses RQ's own ``Worker.register_birth``/``register_death`` so `rq info` and
rq-dashboard list slimyq workers. The heartbeat refreshes, in one pipelined round trip, the
worker key's TTL and the started-registry deadline of every job this worker holds. A job whose
deadline passed *and* whose worker key expired belongs to a dead worker: any live worker's
maintenance pass (every few seconds, atomic in Lua) puts it back on its queue and counts the
attempt, so a crashed host's jobs run again within ``abandoned_after`` + a few seconds instead of
RQ's ten-plus minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from slimyq.config import Settings
from slimyq.logs import event
from slimyq.obs import ops
from slimyq.runtime import codec, dependents, keys, metrics
from slimyq.runtime.scripts import Scripts

if TYPE_CHECKING:
    from slimyq.runtime.worker import QueueWorker

log = logging.getLogger("slimyq.worker")
MAINTENANCE_EVERY = 5.0
TRIM_THROUGHPUT_EVERY = 60.0


def _recover(conn: redis.Redis, settings: Settings, queue: str, mode: str, worker: str, message: str,
             members: list[str] | None = None) -> list[str]:
    qs = settings.queue(queue)
    now = time.time()
    reply: Any = Scripts(conn).recover(
        args=[queue, mode, worker, f"{now:.6f}", codec.rq_now(), qs.attempts - 1,
              codec.encode_exc_string(message), codec.DEFAULT_FAILURE_TTL, qs.keep_failed, message,
              *(codec.wire(m) for m in members or [])]
    )
    ids = [codec.text_id(r) if isinstance(r, bytes) else str(r) for r in reply]
    if mode in ("dead", "expired"):
        dependents.after_recovery(conn, ids)  # the allow_failure dependents of jobs it failed
    return ids


def release(conn: redis.Redis, settings: Settings, queue: str, worker: str) -> list[str]:
    """Put every job ``worker`` holds back at the front of its queue (a stop, not a failure)."""
    return _recover(conn, settings, queue, "release", worker, "")


def release_members(conn: redis.Redis, settings: Settings, queue: str, worker: str,
                    members: list[str]) -> list[str]:
    """Put back executions ``worker`` holds in Redis but never received (lost claim replies)."""
    return _recover(conn, settings, queue, "orphans", worker, "", members)


def release_orphans(conn: redis.Redis, settings: Settings, queue: str, worker: str, known: set[str]) -> list[str]:
    """Put back executions Redis says ``worker`` holds that it never received (``known``: what it
    did receive). Only the worker's one claiming thread calls this, so an execution registered to
    it (in its executions set, or past its deadline in the started registry with its name on the
    job) that it does not know is such an orphan. One that completed meanwhile is left alone by
    the script (it is no longer in the started registry)."""
    members: Any = conn.smembers(keys.worker_executions(worker))
    held = {codec.text_id(m) for m in members}
    due: Any = conn.zrangebyscore(keys.started(queue), "-inf", time.time(), start=0, num=1000)
    orphans = held - known
    candidates = [m for m in (codec.text_id(d) for d in due) if m not in known and m not in orphans]
    if candidates:
        pipe = conn.pipeline(transaction=False)
        for m in candidates:
            pipe.hget(b"rq:job:" + codec.wire(m.rpartition(":")[0]), "worker_name")
        mine = worker.encode()
        orphans |= {m for m, owner in zip(candidates, pipe.execute(), strict=True) if owner == mine}
    return release_members(conn, settings, queue, worker, sorted(orphans)) if orphans else []


def recover_dead(conn: redis.Redis, settings: Settings, queue: str, worker: str, how: str) -> list[str]:
    """``worker``'s process died: count a failed attempt for each of its jobs and retry them now."""
    ids = _recover(conn, settings, queue, "dead", worker, f"worker {worker} died ({how}) while running the job")
    unregister(conn, worker, queue)
    return ids


def recover_stuck(conn: redis.Redis, settings: Settings, queue: str, worker: str) -> list[str]:
    """``worker`` exited to end job threads that ignored their timeout: now that the process is gone,
    each job it still held counts a failed attempt and is retried (or failed)."""
    ids = _recover(conn, settings, queue, "dead", worker, "the job ran past its timeout and its thread did not "
                   "stop; the worker process was restarted before the job was handed back")
    unregister(conn, worker, queue)
    return ids


def recover_unwritten(conn: redis.Redis, settings: Settings, queue: str, worker: str) -> list[str]:
    """``worker`` exited because it could not write job outcomes: each job it still held counts a
    failed attempt and is retried (or failed), so a batch that can never be written ends."""
    ids = _recover(conn, settings, queue, "dead", worker, "the worker could not write the job's outcome; the "
                   "worker process was restarted")
    unregister(conn, worker, queue)
    return ids


def recover_expired(conn: redis.Redis, settings: Settings, queue: str) -> list[str]:
    """Jobs of workers that stopped heartbeating (a host died, a process was frozen)."""
    return _recover(conn, settings, queue, "expired", "", "worker stopped sending heartbeats (abandoned job)")


def record_ttl(settings: Settings) -> int:
    """Seconds an execution record lives without a heartbeat: past ``abandoned_after`` plus one
    heartbeat, so RQ's monitors never see a live worker's record as stale."""
    return int(settings.worker.abandoned_after + settings.worker.heartbeat) + 1


def unregister(conn: redis.Redis, worker: str, queue: str) -> None:
    pipe = conn.pipeline()
    pipe.srem(keys.workers(), keys.worker(worker))
    pipe.srem(keys.workers(queue), keys.worker(worker))
    pipe.srem(keys.claim_lists(queue), worker)
    pipe.hset(keys.worker(worker), "death", codec.rq_now())
    pipe.expire(keys.worker(worker), 60)
    pipe.delete(keys.worker_executions(worker))
    pipe.execute()


class Presence:
    def __init__(self, conn: redis.Redis, settings: Settings, queue: str, name: str, owner: QueueWorker) -> None:
        self.conn = conn
        self.settings = settings
        self.queue = queue
        self.name = name
        self.owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slimyq-heartbeat", daemon=True)
        self._registration: list[bytes] = []
        self._connections: dict[str, int] = {}
        self._connections_at = 0.0
        self.scripts = Scripts(conn)
        self.deferred = dependents.DeferredSweep(conn, queue)

    def register(self) -> None:
        from rq import Queue, Worker
        from rq.serializers import JSONSerializer

        rq_queue = Queue(self.queue, connection=self.conn, serializer=JSONSerializer)
        worker = Worker([rq_queue], connection=self.conn, name=self.name, serializer=JSONSerializer)
        if self.conn.exists(keys.worker(self.name)):
            self.conn.hset(keys.worker(self.name), "death", codec.rq_now())  # a previous life of this pid
        worker.register_birth()  # type: ignore[no-untyped-call]
        pipe = self.conn.pipeline()
        pipe.hset(keys.worker(self.name), mapping={"state": "idle", "slimyq_concurrency": self.owner.concurrency})
        pipe.sadd(keys.QUEUES, keys.queue(self.queue))
        pipe.sadd(keys.claim_lists(self.queue), self.name)
        pipe.expire(keys.worker(self.name), int(self.settings.worker.abandoned_after))
        pipe.hgetall(keys.worker(self.name))
        registration: dict[bytes, bytes] = pipe.execute()[-1]
        # What the heartbeat writes back should the key lapse (a stall, an outage): the whole
        # registration, so `rq info` and the recovery scripts see this worker as it was.
        self._registration = [v for k, val in registration.items()
                              if k not in (b"last_heartbeat", b"state", b"death") for v in (k, val)]

    def unregister(self) -> None:
        unregister(self.conn, self.name, self.queue)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating; returns once a beat in progress is over (it must not re-register us after
        we unregistered)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        every = self.settings.worker.heartbeat
        next_maintenance = time.monotonic() + MAINTENANCE_EVERY
        next_trim = time.monotonic()
        sweep_every = min(dependents.SWEEP_EVERY, dependents.SWEEP_BEATS * every)
        next_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                self.beat()
                now = time.monotonic()
                if now >= next_maintenance:
                    next_maintenance = now + MAINTENANCE_EVERY
                    recovered = recover_expired(self.conn, self.settings, self.queue)
                    if recovered:
                        event(log, logging.WARNING, "jobs.recovered",
                              f"recovered {len(recovered)} abandoned job(s) on {self.queue}", worker=self.name,
                              queue=self.queue, count=len(recovered), job_ids=recovered[:20])
                if now >= next_trim:
                    next_trim = now + TRIM_THROUGHPUT_EVERY
                    self._trim_throughput()
                if now >= next_sweep:
                    next_sweep = now + sweep_every
                    self._sweep_deferred()
                wait = min(every, MAINTENANCE_EVERY)
            except redis.RedisError:
                wait = 0.5  # beat again as soon as Redis is back: our deadlines are running out
            except Exception:  # never let the heartbeat die: our jobs would be taken from us
                log.exception("heartbeat failed")
                wait = 0.5
            self._stop.wait(wait)

    def beat(self) -> None:
        now = time.time()
        deadline = int(now + self.settings.worker.abandoned_after)
        ttl = int(self.settings.worker.abandoned_after)
        with self.owner.lock:
            members = list(self.owner.inflight)
            busy = self.owner.busy
        reg = self._registration
        lost: Any = self.scripts.heartbeat(args=[
            self.queue, self.name, ttl, codec.rq_now(), "busy" if busy else "idle", deadline,
            record_ttl(self.settings), f"{now:.6f}", len(reg), *reg, *(codec.wire(m) for m in members)])
        if lost:
            self.owner.taken_over([codec.text_id(m) for m in lost])
        self._report_connections()  # the slimyq_db_connections gauge lives in the worker hash
        completer = getattr(self.owner, "completer", None)
        if completer is not None and completer.history_dropped:
            self.conn.hset(keys.HISTORY_DROPPED, self.name, completer.history_dropped)

    def _sweep_deferred(self) -> None:
        try:
            enqueued = self.deferred.run()
        except redis.ConnectionError:
            raise
        except Exception:  # a job hash RQ cannot read: the next sweep looks again
            log.exception("the sweep of %s's deferred jobs failed", self.queue)
            return
        if enqueued:
            event(log, logging.WARNING, "dependents.enqueued",
                  f"enqueued {len(enqueued)} dependent job(s) left deferred on {self.queue}", worker=self.name,
                  queue=self.queue, count=len(enqueued), job_ids=enqueued[:20])

    def _report_connections(self) -> None:
        """When it changed, and every half minute (a lapsed worker key is written back without it)."""
        now, at = ops.connections(), time.monotonic()
        if now and (now != self._connections or at >= self._connections_at + 30):
            fields = {f"{ops.CONNECTIONS_FIELD}:{backend}": n for backend, n in now.items()}
            pipe = self.conn.pipeline(transaction=True)  # never a worker key without its TTL
            pipe.hset(keys.worker(self.name), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.worker(self.name), int(self.settings.worker.abandoned_after))
            pipe.execute()
            self._connections, self._connections_at = now, at

    def _trim_throughput(self) -> None:
        key = keys.throughput(self.queue)
        fields = [f.decode() for f in self.conn.hkeys(key)]  # type: ignore[union-attr]
        old = metrics.stale_minutes(fields)
        if old:
            self.conn.hdel(key, *old)
