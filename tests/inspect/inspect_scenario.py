"""A known state in the private Valkey for the inspect tests, built with the runtime's own scripts.

database: db-0..db-9 create-conversation jobs (db-7..db-9 belong to user u2, the rest to u1).
  A live worker claims db-0..db-4: db-0, db-1, db-4 finish (0.02 s, 0.2 s, 0.004 s), db-2 fails
  (0.5 s, ValueError), db-3 stays started. A dead worker (no worker key) claims db-5: stuck.
  db-6..db-9 stay queued (4).
audit: paused, two canary jobs queued, no worker.
chat: one canary scheduled in an hour.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from typing import Any

import redis

from slimyq.config import Settings, load_settings
from slimyq.jobs import registry
from slimyq.payloads.canary import Canary
from slimyq.payloads.database import CreateConversation
from slimyq.producer import EnqueueRequest, enqueue_many
from slimyq.runtime import codec, keys, metrics
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.execute import Result
from slimyq.runtime.outcome import decide
from slimyq.runtime.scripts import Scripts

LIVE = "slimyq.hostA.100.database"
DEAD = "slimyq.hostB.200.database"


@dataclass
class Scenario:
    settings: Settings
    conn: redis.Redis


def settings() -> Settings:
    return load_settings().settings


def enqueue_db(conn: redis.Redis, s: Settings, ids: list[str], user: str = "u1") -> None:
    jt = registry.get("create_conversation")
    reqs = [EnqueueRequest(jt, CreateConversation(user_id=user, title="t"), "database", job_id=i) for i in ids]
    assert all(e.status == "queued" for e in enqueue_many(conn, s, reqs))


def enqueue_canary(conn: redis.Redis, s: Settings, queue: str, ids: list[str],
                   run_at: dt.datetime | None = None) -> None:
    jt = registry.get("canary")
    reqs = [EnqueueRequest(jt, Canary(), queue, job_id=i, run_at=run_at) for i in ids]
    list(enqueue_many(conn, s, reqs))


def register_worker(conn: redis.Redis, name: str, queue: str, *, concurrency: int = 10, beat_age: float = 0.0,
                    state: str = "busy") -> None:
    beat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=beat_age)
    host, pid = name.split(".")[1], name.split(".")[2]
    conn.hset(keys.worker(name), mapping={
        "birth": codec.rq_now(), "last_heartbeat": beat.strftime(codec.RQ_TIME), "queues": queue,
        "pid": pid, "hostname": host, "state": state, "slimyq_concurrency": concurrency,
        "successful_job_count": 0, "failed_job_count": 0, "total_working_time": 0,
    })
    conn.expire(keys.worker(name), 60)
    conn.sadd(keys.workers(), keys.worker(name))
    conn.sadd(keys.workers(queue), keys.worker(name))


def claim(conn: redis.Redis, queue: str, worker: str, n: int) -> list[ClaimedJob]:
    now = time.time()
    eids = [os.urandom(4).hex() for _ in range(n)]
    reply: Any = Scripts(conn).claim(args=[queue, worker, n, f"{now:.6f}", codec.rq_now(), int(now + 20), 0, 60, 1,
                                           *eids])
    return [ClaimedJob(row[0].decode(), row[1].decode(), dict(zip(codec.CLAIM_FIELDS, row[2:], strict=False)))
            for row in reply[1:]]


def complete(conn: redis.Redis, s: Settings, queue: str, worker: str, job: ClaimedJob, *, ok: bool,
             seconds: float, job_type: str = "create_conversation", permanent: bool = True) -> None:
    started = time.time() - seconds
    result = Result(ok=ok, value={"success": True} if ok else None, error_type="" if ok else "ValueError",
                    error="" if ok else "boom: bad title", traceback="" if ok else
                    "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom: bad title\n",
                    permanent=permanent, job_type=job_type, started=started, ended=started + seconds)
    c = decide(job, result, s.queue(queue), worker)
    stats = metrics.increments(queue, [c.ended])
    qs = s.queue(queue)
    args: list[Any] = [queue, worker, int(time.time()), codec.rq_now(), qs.keep_finished, qs.keep_failed, 0, 1,
                       len(stats), os.urandom(8).hex(), *c.args]
    for stat in stats:
        args.extend(stat)
    wkey = keys.worker(worker)
    if conn.exists(wkey):
        conn.hincrby(wkey, "successful_job_count" if ok else "failed_job_count", 1)
    assert Scripts(conn).complete(args=args) == [1]


def build(conn: redis.Redis) -> Scenario:
    s = settings()
    enqueue_db(conn, s, [f"db-{i}" for i in range(7)], "u1")
    enqueue_db(conn, s, [f"db-{i}" for i in range(7, 10)], "u2")
    register_worker(conn, LIVE, "database")
    jobs = {j.id: j for j in claim(conn, "database", LIVE, 5)}
    assert sorted(jobs) == [f"db-{i}" for i in range(5)]
    complete(conn, s, "database", LIVE, jobs["db-0"], ok=True, seconds=0.02)
    complete(conn, s, "database", LIVE, jobs["db-1"], ok=True, seconds=0.2)
    complete(conn, s, "database", LIVE, jobs["db-2"], ok=False, seconds=0.5)
    complete(conn, s, "database", LIVE, jobs["db-4"], ok=True, seconds=0.004)
    stuck = claim(conn, "database", DEAD, 1)
    assert [j.id for j in stuck] == ["db-5"]
    enqueue_canary(conn, s, "audit", ["au-0", "au-1"])
    conn.set(keys.paused("audit"), codec.rq_now())
    enqueue_canary(conn, s, "chat", ["ch-0"], run_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    return Scenario(s, conn)
