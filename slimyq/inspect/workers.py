"""Live workers: RQ's worker registrations (``rq:workers``) as slimyq's runtime writes them.

Two pipelined round trips whatever the number of jobs: the registry set, then every worker's hash
and its current executions. Workers whose key expired, that registered their death, or whose last
heartbeat is older than 1.5 heartbeat periods (+1 s) are left out, so a dead host's workers
disappear within about a heartbeat period (a worker process that dies under a live supervisor is
unregistered at once).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import redis

from slimyq.inspect._common import as_float, as_int, decode_map, job_id_of, text, when, worker_alive
from slimyq.runtime import keys

_PREFIX = keys.worker("")


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    host: str
    pid: int | None
    queues: list[str]
    state: str
    concurrency: int | None
    current_jobs: list[str]
    jobs_done: int
    successful: int
    failed: int
    working_seconds: float
    last_heartbeat: dt.datetime | None
    birth: dt.datetime | None
    heartbeat_age_seconds: float | None = field(default=None)


def _state(stored: str | None, executions: list[str]) -> str:
    """``busy`` with current jobs, ``idle`` without; other states a worker writes (suspended, ...) kept.

    Computed from the current jobs, because the stored state is written when a worker's loop turns
    and lags behind the jobs a threaded worker holds."""
    if stored not in (None, "", "busy", "idle", "started"):
        return str(stored)
    return "busy" if executions else "idle"


def _info(name: str, fields: dict[str, str], executions: list[str], now: float) -> WorkerInfo:
    ok, bad = as_int(fields.get("successful_job_count")), as_int(fields.get("failed_job_count"))
    beat = when(fields.get("last_heartbeat"))
    pid = as_int(fields.get("pid"), -1)
    conc = as_int(fields.get("slimyq_concurrency"), -1)
    return WorkerInfo(
        name=name,
        host=fields.get("hostname", ""),
        pid=pid if pid >= 0 else None,
        queues=[q for q in fields.get("queues", "").split(",") if q],
        state=_state(fields.get("state"), executions),
        concurrency=conc if conc >= 0 else None,
        current_jobs=sorted(job_id_of(m) for m in executions),
        jobs_done=ok + bad,
        successful=ok,
        failed=bad,
        working_seconds=round(as_float(fields.get("total_working_time")), 3),
        last_heartbeat=beat,
        birth=when(fields.get("birth")),
        heartbeat_age_seconds=round(now - beat.timestamp(), 1) if beat else None,
    )


def list_workers(conn: redis.Redis, heartbeat: float, queues: list[str] | None = None) -> list[WorkerInfo]:
    """Every live worker (of ``queues`` when given), sorted by queue then name."""
    members = conn.smembers(keys.workers())
    names = sorted(n.removeprefix(_PREFIX) for n in (text(m) or "" for m in members))
    if not names:
        return []
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
        pipe.smembers(keys.worker_executions(name))
    replies = pipe.execute()
    now = time.time()
    out: list[WorkerInfo] = []
    for i, name in enumerate(names):
        fields = decode_map(replies[2 * i])
        if not worker_alive(fields, heartbeat, now):
            continue
        info = _info(name, fields, [text(m) or "" for m in replies[2 * i + 1]], now)
        if queues and not set(info.queues) & set(queues):
            continue
        out.append(info)
    out.sort(key=lambda w: (",".join(w.queues), w.name))
    return out
