"""Operating on jobs and queues: requeue, cancel, delete, pause, resume, empty, prune.

Every change to a job is one small Lua script, so a worker claiming or completing at the same
moment sees the job either before or after, never half moved: the claim script skips canceled
jobs, and the completion script writes nothing for an execution that is no longer in
``rq:wip:<queue>`` (requeued or deleted meanwhile). Scripts build key names from RQ's ``rq:``
prefix like the runtime's own (single server, not Redis Cluster).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from slimyq.config import Settings
from slimyq.inspect._common import meta, norm_type, text
from slimyq.runtime import codec, keys

# Shared Lua: the execution members of a job in its queue's started registry, and whether the
# worker that runs it is alive.
_HELPERS = """
local function wip_members(q, id)
  local found = {}
  local cursor = '0'
  repeat
    local reply = redis.call('ZSCAN', 'rq:wip:' .. q, cursor, 'MATCH', id .. ':*', 'COUNT', 1000)
    cursor = reply[1]
    for i = 1, #reply[2], 2 do table.insert(found, reply[2][i]) end
  until cursor == '0'
  return found
end
local function worker_alive(w)
  if not w or w == '' then return false end
  local wk = 'rq:worker:' .. w
  return redis.call('EXISTS', wk) == 1 and redis.call('HEXISTS', wk, 'death') == 0
end
local function unstart(q, id, w)
  for _, m in ipairs(wip_members(q, id)) do
    redis.call('ZREM', 'rq:wip:' .. q, m)
    if w and w ~= '' then redis.call('SREM', 'rq:worker:' .. w .. ':executions', m) end
    redis.call('UNLINK', 'rq:execution:' .. m)
  end
  redis.call('UNLINK', 'rq:executions:' .. id)
end
"""

# ARGV: id, now (RQ time), retries_left. Returns the outcome: requeued | missing | queued |
# running (its worker is alive).
REQUEUE = _HELPERS + """
local id, iso, retries = ARGV[1], ARGV[2], ARGV[3]
local jk = 'rq:job:' .. id
if redis.call('EXISTS', jk) == 0 then return 'missing' end
local status = redis.call('HGET', jk, 'status') or ''
local q = redis.call('HGET', jk, 'origin') or ''
local w = redis.call('HGET', jk, 'worker_name') or ''
if status == 'queued' then return 'queued' end
if status == 'started' then
  if worker_alive(w) then return 'running' end
  unstart(q, id, w)
end
for _, reg in ipairs({'finished', 'failed', 'canceled', 'scheduled', 'deferred'}) do
  redis.call('ZREM', 'rq:' .. reg .. ':' .. q, id)
end
redis.call('PERSIST', jk)
redis.pcall('ZREM', 'slimyq:trimmed:' .. q, id)  -- trimmed a moment ago: kept, as PERSIST keeps it
redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso, 'started_at', '', 'ended_at', '',
  'worker_name', '', 'retries_left', retries)
redis.call('SADD', 'rq:queues', 'rq:queue:' .. q)
redis.call('RPUSH', 'rq:queue:' .. q, id)
return 'requeued'
"""

# ARGV: id, now (RQ time), now (epoch int), ttl. Returns canceled | missing | running | <status>.
CANCEL = """
local id, iso, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local jk = 'rq:job:' .. id
if redis.call('EXISTS', jk) == 0 then return 'missing' end
local status = redis.call('HGET', jk, 'status') or ''
local q = redis.call('HGET', jk, 'origin') or ''
if status == 'started' then return 'running' end
if status ~= 'queued' and status ~= 'scheduled' and status ~= 'deferred' then return status end
redis.call('LREM', 'rq:queue:' .. q, 0, id)
redis.call('ZREM', 'rq:scheduled:' .. q, id)
redis.call('ZREM', 'rq:deferred:' .. q, id)
redis.call('HSET', jk, 'status', 'canceled', 'ended_at', iso)
redis.call('ZADD', 'rq:canceled:' .. q, now + ttl, id)
redis.call('EXPIRE', jk, ttl)
return 'canceled'
"""

# ARGV: id, force (0/1). Returns deleted | missing | running.
DELETE = _HELPERS + """
local id, force = ARGV[1], ARGV[2] == '1'
local jk = 'rq:job:' .. id
if redis.call('EXISTS', jk) == 0 then
  redis.call('DEL', 'rq:results:' .. id)
  return 'missing'
end
local status = redis.call('HGET', jk, 'status') or ''
local q = redis.call('HGET', jk, 'origin') or ''
local w = redis.call('HGET', jk, 'worker_name') or ''
if status == 'started' and worker_alive(w) and not force then return 'running' end
unstart(q, id, w)
if status == 'queued' then redis.call('LREM', 'rq:queue:' .. q, 0, id) end
for _, reg in ipairs({'finished', 'failed', 'canceled', 'scheduled', 'deferred'}) do
  redis.call('ZREM', 'rq:' .. reg .. ':' .. q, id)
end
redis.call('DEL', jk, 'rq:results:' .. id)
return 'deleted'
"""

# ARGV: queue, n. Pops up to n ids from the head of the queue and deletes their jobs. Returns
# how many ids were popped (0: the queue is empty).
EMPTY = """
local ids = redis.call('LPOP', 'rq:queue:' .. ARGV[1], tonumber(ARGV[2]))
if not ids then return 0 end
for _, id in ipairs(ids) do
  local jk = 'rq:job:' .. id
  local status = redis.call('HGET', jk, 'status')
  if not status or status == 'queued' or status == 'canceled' then
    redis.call('DEL', jk, 'rq:results:' .. id)
  end
end
return #ids
"""

# ARGV: queue, keep_finished, keep_failed, now. Trims each registry to its retention count and
# drops entries past their expiry (never those kept forever); returns {finished removed, failed removed}.
PRUNE = """
local q, now = ARGV[1], tonumber(ARGV[4])
local function trim(registry, keep)
  local gone = redis.call('ZRANGEBYSCORE', registry, '-inf', now)
  -- Jobs kept forever (RQ's ttl -1, score +inf) are neither expired nor counted nor trimmed.
  local count = redis.call('ZCOUNT', registry, '-inf', '(+inf') - #gone
  if count > keep then
    local old = redis.call('ZRANGE', registry, #gone, #gone + count - keep - 1)
    for _, id in ipairs(old) do table.insert(gone, id) end
  end
  for i = 1, #gone, 500 do
    local chunk = {unpack(gone, i, math.min(i + 499, #gone))}
    redis.call('ZREM', registry, unpack(chunk))
    for _, id in ipairs(chunk) do redis.call('UNLINK', 'rq:job:' .. id, 'rq:results:' .. id) end
  end
  return #gone
end
return {trim('rq:finished:' .. q, tonumber(ARGV[2])), trim('rq:failed:' .. q, tonumber(ARGV[3]))}
"""


@dataclass(frozen=True)
class Done:
    id: str
    action: str
    outcome: str  # requeued | canceled | deleted | not found | running | <the state it is in>
    ok: bool


_MESSAGES = {"missing": "not found", "running": "running (its worker is alive)"}


def _done(job_id: str, action: str, reply: object, success: str) -> Done:
    outcome = text(reply) or ""
    return Done(job_id, action, _MESSAGES.get(outcome, outcome if outcome == success else f"skipped: {outcome}"),
                outcome == success)


def requeue(conn: redis.Redis, settings: Settings, ids: list[str]) -> list[Done]:
    """Put jobs back on their queue (from failed, finished, canceled, scheduled, or started on a
    dead worker) with a fresh retry budget; their attempt history is kept."""
    script = conn.register_script(REQUEUE)
    out = []
    for chunk in _chunks(ids, 200):
        pipe = conn.pipeline(transaction=False)
        origins = _origins(conn, chunk)
        now = codec.rq_now()
        for job_id in chunk:
            q = origins.get(job_id)
            retries = settings.queues[q].attempts - 1 if q in settings.queues else 2
            script(args=[job_id, now, retries], client=pipe)
        out += [_done(i, "requeue", r, "requeued") for i, r in zip(chunk, pipe.execute(), strict=True)]
    return out


def cancel(conn: redis.Redis, ids: list[str]) -> list[Done]:
    """Queued, scheduled or deferred jobs to the canceled registry (running jobs are refused)."""
    script = conn.register_script(CANCEL)
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        script(args=[job_id, codec.rq_now(), int(time.time()), codec.DEFAULT_FAILURE_TTL], client=pipe)
    return [_done(i, "cancel", r, "canceled") for i, r in zip(ids, pipe.execute() if ids else [], strict=True)]


def delete(conn: redis.Redis, ids: list[str], force: bool = False) -> list[Done]:
    """Remove jobs from every queue and registry, with their hash and results."""
    script = conn.register_script(DELETE)
    out = []
    for chunk in _chunks(ids, 500):
        pipe = conn.pipeline(transaction=False)
        for job_id in chunk:
            script(args=[job_id, int(force)], client=pipe)
        out += [_done(i, "delete", r, "deleted") for i, r in zip(chunk, pipe.execute(), strict=True)]
    return out


def _chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def _origins(conn: redis.Redis, ids: list[str]) -> dict[str, str]:
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "origin")
    return {i: text(o) or "" for i, o in zip(ids, pipe.execute(), strict=True)}


def failed_ids(conn: redis.Redis, queue: str, job_type: str | None = None) -> list[str]:
    """Ids in a queue's failed registry (of one job type when given), oldest first."""
    wanted = norm_type(job_type)
    out: list[str] = []
    start = 0
    while True:
        ids = [text(i) or "" for i in conn.zrange(keys.failed(queue), start, start + 999)]
        if not ids:
            return out
        start += len(ids)
        if not wanted:
            out += ids
            continue
        pipe = conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "meta")
        out += [i for i, m in zip(ids, pipe.execute(), strict=True) if meta(m).get("type") == wanted]


# ---------------------------------------------------------------- queues


def pause(conn: redis.Redis, queue: str) -> bool:
    """Workers of ``queue`` stop taking its jobs at their next claim (within about half a second).
    Returns False when it was paused already."""
    return bool(conn.set(keys.paused(queue), codec.rq_now(), nx=True))


def resume(conn: redis.Redis, queue: str) -> bool:
    return bool(conn.delete(keys.paused(queue)))


def queued_count(conn: redis.Redis, queue: str) -> int:
    return int(conn.llen(keys.queue(queue)))


def empty(conn: redis.Redis, queue: str, batch: int = 1000) -> int:
    """Delete every queued job of ``queue`` (not started, scheduled or kept ones), a batch per
    atomic step; returns how many were removed."""
    script = conn.register_script(EMPTY)
    total = 0
    while True:
        popped = int(script(args=[queue, batch]))
        total += popped
        if popped == 0:
            return total


@dataclass(frozen=True)
class Pruned:
    queue: str
    finished_removed: int
    failed_removed: int
    keep_finished: int
    keep_failed: int
    dry_run: bool


def prune(conn: redis.Redis, settings: Settings, queue: str, dry_run: bool = False) -> Pruned:
    """Trim the finished and failed registries to the queue's retention counts (and drop expired
    entries), deleting the trimmed jobs and their results."""
    qs = settings.queue(queue)
    now = int(time.time())
    if dry_run:
        pipe = conn.pipeline(transaction=False)
        for key in (keys.finished(queue), keys.failed(queue)):
            pipe.zcount(key, "-inf", now)
            pipe.zcard(key)
        gone_f, card_f, gone_x, card_x = (int(v) for v in pipe.execute())
        fin = gone_f + max(card_f - gone_f - qs.keep_finished, 0)
        fail = gone_x + max(card_x - gone_x - qs.keep_failed, 0)
        return Pruned(queue, fin, fail, qs.keep_finished, qs.keep_failed, True)
    reply = conn.register_script(PRUNE)(args=[queue, qs.keep_finished, qs.keep_failed, now])
    fin, fail = (int(v) for v in reply)
    return Pruned(queue, fin, fail, qs.keep_finished, qs.keep_failed, False)
