"""Lua scripts: the per-job hot path in a few atomic round trips, writing RQ's own keys.

Why Lua: RQ's worker spends ~20 round trips and ~60 commands on every job, and its BLPOP/BLMOVE
dequeue is not atomic with the move to the started registry (rq#1716, rq#2061). Here a claim
pops up to N jobs *and* registers them as started in one atomic step, so a job is always either
in its queue, in a worker's claim list, or in ``rq:wip:<queue>`` with its execution member.

Key layout follows RQ 3 (see ``keys.py``); scripts build key names from the ``rq:`` prefix, so
they are for a single Redis/Valkey server (not Redis Cluster), like RQ itself.
"""

from __future__ import annotations

from typing import Any

import redis

from slimyq.runtime.codec import CLAIM_FIELDS

_HMGET_FIELDS = ", ".join(f"'{f}'" for f in CLAIM_FIELDS)

# KEYS: none. ARGV: 1 queue, 2 mode, 3 n, 4 rate limit (requests per window), 5 window (ms), then
# per job: id, score, rate-limit counter key ('' when the job is not rate limited), nfields, field,
# value, ...
# Returns a list with 1 for each job written, 0 for an id that already existed (nothing written);
# or {-1, i, ttl_ms} when job i would take its user over the rate limit: then nothing at all is
# written or counted. Only jobs actually written are counted, in the same atomic step.
ENQUEUE = """
local q = ARGV[1]
local mode = ARGV[2]          -- 'queue' | 'front' | 'schedule'
local n = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local pos = 6
local jobs = {}
local seen = {}
local counts = {}
for i = 1, n do
  local id, rk, nf = ARGV[pos], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  local new = not seen[id] and redis.call('EXISTS', 'rq:job:' .. id) == 0
  seen[id] = true
  jobs[i] = {new, pos}
  if new and rk ~= '' then
    counts[rk] = (counts[rk] or 0) + 1
    if tonumber(redis.call('GET', rk) or '0') + counts[rk] > limit then
      local ttl = redis.call('PTTL', rk)
      if ttl < 0 then ttl = window end
      return {-1, i, ttl}
    end
  end
  pos = pos + 4 + nf * 2
end
local out = {}
redis.call('SADD', 'rq:queues', 'rq:queue:' .. q)
for i = 1, n do
  local new, p = jobs[i][1], jobs[i][2]
  if new then
    local id, score, nf = ARGV[p], ARGV[p + 1], tonumber(ARGV[p + 3])
    local jk = 'rq:job:' .. id
    redis.call('HSET', jk, unpack(ARGV, p + 4, p + 3 + nf * 2))
    if mode == 'schedule' then
      redis.call('ZADD', 'rq:scheduled:' .. q, score, id)
    elseif mode == 'front' then
      redis.call('LPUSH', 'rq:queue:' .. q, id)
    else
      redis.call('RPUSH', 'rq:queue:' .. q, id)
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
for rk, count in pairs(counts) do
  redis.call('INCRBY', rk, count)
  if redis.call('PTTL', rk) < 0 then
    redis.call('PEXPIRE', rk, window)
  end
end
return out
"""

# ARGV: 1 queue, 2 worker, 3 n, 4 now (float), 5 now (RQ time), 6 started deadline, 7 promote (0/1),
#       8.. execution ids (n).
# Returns {paused(0/1), {id, eid, field values...}, ...}.
CLAIM = f"""
local q = ARGV[1]
local w = ARGV[2]
local n = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local iso = ARGV[5]
local deadline = ARGV[6]
local qkey = 'rq:queue:' .. q
if ARGV[7] == '1' then
  local skey = 'rq:scheduled:' .. q
  local due = redis.call('ZRANGEBYSCORE', skey, '-inf', now, 'LIMIT', 0, 500)
  for _, id in ipairs(due) do
    redis.call('ZREM', skey, id)
    local jk = 'rq:job:' .. id
    if redis.call('EXISTS', jk) == 1 then
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso)
      if redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1' then
        redis.call('LPUSH', qkey, id)
      else
        redis.call('RPUSH', qkey, id)
      end
    end
  end
end
if redis.call('EXISTS', 'slimyq:paused:' .. q) == 1 then
  return {{1}}
end
local out = {{0}}
local ids = {{}}
local claim = 'slimyq:claim:' .. w
local c = redis.call('LPOP', claim, n)
if c then for _, id in ipairs(c) do table.insert(ids, id) end end
if #ids < n then
  local more = redis.call('LPOP', qkey, n - #ids)
  if more then for _, id in ipairs(more) do table.insert(ids, id) end end
end
local wexec = 'rq:worker:' .. w .. ':executions'
for i, id in ipairs(ids) do
  local jk = 'rq:job:' .. id
  local f = redis.call('HMGET', jk, 'status', {_HMGET_FIELDS})
  -- A hash without data is still claimed: the worker fails it as refused (not dropped unseen).
  if (f[1] or f[2]) and f[1] ~= 'canceled' and f[1] ~= 'stopped' then
    local eid = ARGV[7 + i]
    local member = id .. ':' .. eid
    redis.call('HSET', jk, 'status', 'started', 'started_at', iso, 'last_heartbeat', iso, 'worker_name', w)
    redis.call('PERSIST', jk)
    redis.call('ZADD', 'rq:wip:' .. q, deadline, member)
    redis.call('SADD', wexec, member)
    table.remove(f, 1)
    table.insert(f, 1, eid)
    table.insert(f, 1, id)
    table.insert(out, f)
  end
end
return out
"""

# Batch completion. ARGV: 1 queue, 2 worker, 3 now int, 4 now (RQ time), 5 keep_finished,
# 6 keep_failed, 7 trim grace seconds, 8 njobs, 9 nstats, then per job 10 values:
#   id, eid, outcome(ok|fail|retry), ttl, payload (b64), attempts json, delay, retries_left,
#   started (float), ended (float)
# then per stat 4 values: key, field, kind (i|f), amount.
# Returns a list: 1 applied, 0 stale (the job was recovered or deleted meanwhile: nothing written).
COMPLETE = """
local q = ARGV[1]
local w = ARGV[2]
local now = tonumber(ARGV[3])
local iso = ARGV[4]
local keep_finished = tonumber(ARGV[5])
local keep_failed = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])
local njobs = tonumber(ARGV[8])
local nstats = tonumber(ARGV[9])
local wip = 'rq:wip:' .. q
local wexec = 'rq:worker:' .. w .. ':executions'
local out = {}
local added_finished, added_failed = false, false
local pos = 10
-- The registry score: the attempt's end (to the microsecond, kept as a string) plus the TTL, so
-- trimming drops the jobs that ended first even when many end within the same second.
local function expiry(ended, ttl)
  local int, frac = string.match(ended, '^(%d+)%.(%d+)$')
  if not int then return now + ttl end
  return tostring(tonumber(int) + ttl) .. '.' .. frac
end
for i = 1, njobs do
  local id, eid, outcome, ttl = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  local payload, attempts, delay = ARGV[pos + 4], ARGV[pos + 5], tonumber(ARGV[pos + 6])
  local retries_left, started, ended = ARGV[pos + 7], ARGV[pos + 8], ARGV[pos + 9]
  pos = pos + 10
  local member = id .. ':' .. eid
  redis.call('SREM', wexec, member)
  local jk = 'rq:job:' .. id
  if redis.call('ZREM', wip, member) == 1 and redis.call('EXISTS', jk) == 1 then
    out[i] = 1
    local rk = 'rq:results:' .. id
    if outcome == 'ok' then
      redis.call('HSET', jk, 'status', 'finished', 'ended_at', iso, 'last_heartbeat', iso,
        'slimyq_attempts', attempts)
      redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '1', 'worker_name', w,
        'return_value', payload, 'execution_id', eid, 'execution_started_at', started,
        'execution_ended_at', ended)
      redis.call('EXPIRE', rk, ttl)
      redis.call('EXPIRE', jk, ttl)
      redis.call('ZADD', 'rq:finished:' .. q, expiry(ended, ttl), id)
      added_finished = true
    elseif outcome == 'fail' then
      redis.call('HSET', jk, 'status', 'failed', 'ended_at', iso, 'last_heartbeat', iso,
        'slimyq_attempts', attempts, 'retries_left', retries_left)
      redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '2', 'worker_name', w,
        'exc_string', payload, 'execution_id', eid, 'execution_started_at', started,
        'execution_ended_at', ended)
      redis.call('EXPIRE', rk, ttl)
      redis.call('EXPIRE', jk, ttl)
      redis.call('ZADD', 'rq:failed:' .. q, expiry(ended, ttl), id)
      added_failed = true
    else
      if delay > 0 then
        redis.call('HSET', jk, 'status', 'scheduled', 'ended_at', iso, 'slimyq_attempts', attempts,
          'retries_left', retries_left)
        redis.call('ZADD', 'rq:scheduled:' .. q, now + delay, id)
      else
        redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso, 'ended_at', iso,
          'slimyq_attempts', attempts, 'retries_left', retries_left)
        redis.call('LPUSH', 'rq:queue:' .. q, id)
      end
    end
  else
    out[i] = 0
  end
end
for i = 1, nstats do
  local key, field, kind, amount = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
  pos = pos + 4
  if kind == 'f' then
    redis.call('HINCRBYFLOAT', key, field, amount)
  else
    redis.call('HINCRBY', key, field, amount)
  end
end
local function trim(registry, keep)
  local count = redis.call('ZCARD', registry)
  if count > keep then
    local old = redis.call('ZRANGE', registry, 0, count - keep - 1)
    redis.call('ZREMRANGEBYRANK', registry, 0, count - keep - 1)
    for _, id in ipairs(old) do
      if grace > 0 then
        redis.call('EXPIRE', 'rq:job:' .. id, grace)
        redis.call('EXPIRE', 'rq:results:' .. id, grace)
      else
        redis.call('UNLINK', 'rq:job:' .. id, 'rq:results:' .. id)
      end
    end
  end
end
if added_finished then trim('rq:finished:' .. q, keep_finished) end
if added_failed then trim('rq:failed:' .. q, keep_failed) end
return out
"""

# Put jobs a worker holds back on their queue, or retry/fail them when the worker died.
# ARGV: 1 queue, 2 mode ('release' | 'dead' | 'expired' | 'orphans'), 3 worker ('' for expired),
#       4 now float, 5 now (RQ time), 6 default retries, 7 b64(zlib(message)) for failures,
#       8 failure ttl, 9 keep_failed, 10 message text, 11.. members (orphans only).
# release: the worker is alive and stopping; its jobs go back to the front of the queue as they
#          were (no attempt is counted).
# dead:    the worker process is gone (its supervisor saw it die): each job counts a failed
#          attempt and is retried at once, or failed when no retries are left.
# expired: started-registry entries past their deadline whose worker key has expired.
# orphans: the given executions of a live worker that never received them (a claim whose reply
#          was lost): back to the front of the queue as they were, like release.
# Returns the ids handled.
RECOVER = """
local q, mode, w = ARGV[1], ARGV[2], ARGV[3]
local now, iso, default_retries = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local exc, failure_ttl, keep_failed, message = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local wip = 'rq:wip:' .. q
local qkey = 'rq:queue:' .. q
local handled = {}
local members = {}
-- A worker's claim list goes back to the front of the queue, in its order.
local function return_claims(worker)
  local claim = 'slimyq:claim:' .. worker
  local c = redis.call('LRANGE', claim, 0, -1)
  for i = #c, 1, -1 do
    redis.call('LPUSH', qkey, c[i])
    table.insert(handled, c[i])
  end
  redis.call('DEL', claim)
  redis.call('SREM', 'slimyq:claims:' .. q, worker)
end
if mode == 'expired' then
  for _, cw in ipairs(redis.call('SMEMBERS', 'slimyq:claims:' .. q)) do
    if redis.call('EXISTS', 'rq:worker:' .. cw) == 0 then return_claims(cw) end
  end
  local expired = redis.call('ZRANGEBYSCORE', wip, '-inf', now, 'LIMIT', 0, 1000)
  for _, m in ipairs(expired) do
    local id = string.match(m, '^(.*):[^:]*$') or m
    local owner = redis.call('HGET', 'rq:job:' .. id, 'worker_name')
    if not owner or redis.call('EXISTS', 'rq:worker:' .. owner) == 0 then
      table.insert(members, m)
    end
  end
elseif mode == 'orphans' then
  for i = 11, #ARGV do table.insert(members, ARGV[i]) end
else
  return_claims(w)
  members = redis.call('SMEMBERS', 'rq:worker:' .. w .. ':executions')
end
for _, m in ipairs(members) do
  local id = string.match(m, '^(.*):[^:]*$') or m
  local jk = 'rq:job:' .. id
  local owner = redis.call('HGET', jk, 'worker_name')
  if owner then redis.call('SREM', 'rq:worker:' .. owner .. ':executions', m) end
  if redis.call('ZREM', wip, m) == 1 and redis.call('HGET', jk, 'status') == 'started' then
    table.insert(handled, id)
    if mode == 'release' or mode == 'orphans' then
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso)
      redis.call('LPUSH', qkey, id)
    else
      local attempts = {}
      local raw = redis.call('HGET', jk, 'slimyq_attempts')
      if raw then
        local ok, decoded = pcall(cjson.decode, raw)
        if ok and type(decoded) == 'table' then attempts = decoded end
      end
      local started = redis.call('HGET', jk, 'started_at')
      table.insert(attempts, {attempt = #attempts + 1, startedAt = started, endedAt = iso,
        outcome = 'abandoned', error = message})
      local left = tonumber(redis.call('HGET', jk, 'retries_left') or default_retries) or default_retries
      if left > 0 then
        redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso, 'retries_left', left - 1,
          'slimyq_attempts', cjson.encode(attempts))
        redis.call('LPUSH', qkey, id)
      else
        redis.call('HSET', jk, 'status', 'failed', 'ended_at', iso, 'slimyq_attempts', cjson.encode(attempts))
        redis.call('XADD', 'rq:results:' .. id, 'MAXLEN', '~', '10', '*', 'type', '2',
          'worker_name', owner or '', 'exc_string', exc)
        redis.call('EXPIRE', 'rq:results:' .. id, failure_ttl)
        redis.call('EXPIRE', jk, failure_ttl)
        redis.call('ZADD', 'rq:failed:' .. q, math.floor(now) + failure_ttl, id)
      end
    end
  end
end
if mode == 'release' or mode == 'dead' then redis.call('DEL', 'rq:worker:' .. w .. ':executions') end
return handled
"""


class Scripts:
    """The registered scripts for one connection (EVALSHA, loaded on first use)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.enqueue = conn.register_script(ENQUEUE)
        self.claim = conn.register_script(CLAIM)
        self.complete = conn.register_script(COMPLETE)
        self.recover = conn.register_script(RECOVER)


def flatten(rows: list[list[Any]]) -> list[Any]:
    return [value for row in rows for value in row]
