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
from slimyq.runtime.liveness_scripts import HEARTBEAT, RECOVER, TRIMMED

_HMGET_FIELDS = ", ".join(f"'{f}'" for f in CLAIM_FIELDS)

# KEYS: none. ARGV: 1 queue, 2 mode, 3 n, 4 rate limit (requests per window), 5 window (ms), 6 nf,
# the nf field names of every job's hash, then per job: id, score, rate-limit counter key ('' when
# the job is not rate limited), its nf values in that order.
# Returns a list with 1 for each job written, 0 for an id that already existed (nothing written);
# or {-1, i, ttl_ms} when job i would take its user over the rate limit: then nothing at all is
# written or counted. Only jobs actually written are counted, in the same atomic step.
ENQUEUE = """
local q = ARGV[1]
local mode = ARGV[2]          -- 'queue' | 'front' | 'schedule'
local n = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local nf = tonumber(ARGV[6])
local kv = {}
for f = 1, nf do kv[2 * f - 1] = ARGV[6 + f] end
local pos = 7 + nf
local jobs = {}
local seen = {}
local counts = {}
for i = 1, n do
  local id, rk = ARGV[pos], ARGV[pos + 2]
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
  pos = pos + 3 + nf
end
local out = {}
redis.call('SADD', 'rq:queues', 'rq:queue:' .. q)
for i = 1, n do
  local new, p = jobs[i][1], jobs[i][2]
  if new then
    local id, score = ARGV[p], ARGV[p + 1]
    local jk = 'rq:job:' .. id
    for f = 1, nf do kv[2 * f] = ARGV[p + 2 + f] end
    redis.call('HSET', jk, unpack(kv))
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
#       8 execution record TTL (s), 9 check the claim list (0/1: the worker's BLMOVE may have put
#       an id there since), 10.. execution ids (n).
# Each claimed job gets RQ 3's execution record, as ``rq.executions.Execution.create`` writes it:
# the hash ``rq:execution:<job>:<eid>``, its id in ``rq:executions:<job>`` and the member
# ``<job>:<eid>`` in ``rq:wip:<queue>`` and ``rq:worker:<name>:executions``.
# Returns {paused(0/1), {id, eid, field values...}, ...}.
CLAIM = TRIMMED + f"""
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
local claim = 'slimyq:claim:' .. w
-- What the claim list holds goes back to the front of the queue, in its order.
local function return_claim_list()
  while redis.call('LMOVE', claim, qkey, 'RIGHT', 'LEFT') do end
end
if redis.call('EXISTS', 'slimyq:paused:' .. q) == 1 then
  return_claim_list()  -- paused: what a BLMOVE moved there is not run now
  return {{1}}
end
local out = {{0}}
local ids = {{}}
if ARGV[9] == '1' then
  local c = redis.call('LPOP', claim, n)
  if c then
    for _, id in ipairs(c) do table.insert(ids, id) end
    -- More than n there (a BLMOVE that redis-py sent again after a lost reply): the rest goes back,
    -- as the worker reads its claim list only after a BLMOVE.
    if #c == n then return_claim_list() end
  end
end
if #ids < n then
  local more = redis.call('LPOP', qkey, n - #ids)
  if more then for _, id in ipairs(more) do table.insert(ids, id) end end
end
local wexec = 'rq:worker:' .. w .. ':executions'
local ttl = tonumber(ARGV[8])
-- First read every job (nothing written yet), then register the batch's executions with one ZADD
-- and one SADD, then write each job and its execution record.
local take, wip_args, members, claimed = {{}}, {{}}, {{}}, {{}}
for i, id in ipairs(ids) do
  local jk = 'rq:job:' .. id
  -- pcall: a key that is not a hash is reported and dropped, never touched. Any hash is claimed,
  -- with or without data: the worker fails what it can't read as refused.
  local f = redis.pcall('HMGET', jk, 'status', {_HMGET_FIELDS})
  local hash = not f.err
  if not hash then
    table.insert(out, {{id, ''}})
  elseif not (f[1] or f[2] or f[3]) then
    hash = redis.call('EXISTS', jk) == 1  -- rare: no status, data nor meta (a deleted job is skipped)
  end
  if hash and f[1] ~= 'canceled' and f[1] ~= 'stopped' then
    local member = id .. ':' .. ARGV[9 + i]
    table.insert(take, {{id, ARGV[9 + i], f}})
    table.insert(wip_args, deadline)
    table.insert(wip_args, member)
    table.insert(members, member)
    table.insert(claimed, id)
  end
end
if #take == 0 then
  -- Nothing to run: the worker's next call is a BLMOVE into its claim list. It is (again) a member
  -- of the queue's claim set first, so that what the BLMOVE moves is found should it die.
  redis.call('SADD', 'slimyq:claims:' .. q, w)
else
  redis.call('ZADD', 'rq:wip:' .. q, unpack(wip_args))
  redis.call('SADD', wexec, unpack(members))
  -- a job trimmed a moment ago and enqueued again under its id (an RQ client) is not deleted
  trimmed_call('ZREM', q, unpack(claimed))
end
for _, t in ipairs(take) do
  local id, eid, f = t[1], t[2], t[3]
  local jk = 'rq:job:' .. id
  redis.call('HSET', jk, 'status', 'started', 'started_at', iso, 'ended_at', '', 'last_heartbeat', iso,
    'worker_name', w)
  redis.call('PERSIST', jk)
  -- The execution record's TTL and its index's are left to the heartbeat (a job done before one
  -- has both deleted with it; a dead worker's are deleted by its recovery).
  redis.call('HSET', 'rq:execution:' .. id .. ':' .. eid, 'id', eid, 'job_id', id, 'created_at', ARGV[4],
    'last_heartbeat', ARGV[4], 'worker_name', w)
  redis.call('ZADD', 'rq:executions:' .. id, now + ttl + 60, eid)
  table.remove(f, 1)
  table.insert(f, 1, eid)
  table.insert(f, 1, id)
  table.insert(out, f)
end
return out
"""

# Batch completion. ARGV: 1 queue, 2 worker, 3 now (float), 4 now (RQ time), 5 keep_finished,
# 6 keep_failed, 7 trim grace seconds, 8 njobs, 9 nstats, 10 batch token, then per job 12 values:
#   id, eid, outcome(ok|fail|stopped|retry), ttl, payload (b64), attempts json, delay, retries_left,
#   started (float), ended (float), started (RQ time), ended (RQ time)
# then per stat 4 values: key, field, kind (i|f), amount.
# TTLs mean what they mean to RQ: -1 keeps the job and its result forever (registry score +inf,
# never trimmed), 0 keeps nothing (the job is deleted once done), N keeps it N seconds.
# The execution record is removed whatever happens. An outcome is written only while the job is
# still ``started`` under this execution: a job canceled or deleted meanwhile (RQ's
# ``Job.cancel``/``delete``, slimyq's recovery) keeps the answer it was given.
# Returns a list: 1 applied, 2 applied and the job has dependents (``rq:job:<id>:dependents``)
# to enqueue, 0 stale (nothing written).
# The reply is kept under the batch token for 600 s: a call that redis-py repeats after a lost
# reply returns the first call's answer and writes nothing twice (metrics included). A repeat
# after longer (Redis unreachable for over ten minutes right after the reply was lost) finds
# every job stale and writes only that batch's metric increments again; a longer TTL would
# keep one key per batch written for that long.
COMPLETE = TRIMMED + """
local done_key = 'slimyq:done:' .. ARGV[10]
local done = redis.call('GET', done_key)
if done then return cjson.decode(done) end
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
local ended_idx, ended_deps = {}, {}
local pos = 11
local function xadd(rk, ...) heal('XADD', rk, 'MAXLEN', '~', '10', '*', ...) end  -- (heal: see HEAL)
-- The registry score: the attempt's end (to the microsecond, kept as a string) plus the TTL, so
-- trimming drops the jobs that ended first even when many end within the same second.
local function expiry(ended, ttl)
  local int, frac = string.match(ended, '^(%d+)%.(%d+)$')
  if not int then return now + ttl end
  return tostring(tonumber(int) + ttl) .. '.' .. frac
end
-- Keep a done job for ttl seconds (RQ's Job.cleanup): returns false when it was deleted (ttl 0).
-- A ttl-0 job's dependents are enqueued by the completer from the outcome it wrote; should that
-- fail, ``slimyq:ended:<id>`` (only for a job with dependents) tells the deferred sweep how it ended.
local unlinks = {}  -- every key this batch deletes, in one UNLINK at the end
local adds = {}  -- registry -> {score, id, ...}: one ZADD per registry
local fronts = {}  -- jobs retried without a delay, last first
local function add(registry, score, id)
  local a = adds[registry]
  if not a then a = {}; adds[registry] = a end
  table.insert(a, score)
  table.insert(a, id)
end
local function keep(jk, rk, registry, id, ttl, ended, status)
  if ttl == 0 then
    table.insert(unlinks, jk)
    table.insert(unlinks, rk)
    if redis.call('EXISTS', jk .. ':dependents') == 1 then
      redis.call('SET', 'slimyq:ended:' .. id, status, 'EX', 86400)
    end
    return false
  elseif ttl < 0 then
    redis.call('PERSIST', rk)
    add(registry, '+inf', id)
  else
    redis.call('EXPIRE', rk, ttl)
    redis.call('EXPIRE', jk, ttl)
    add(registry, expiry(ended, ttl), id)
  end
  return true
end
-- Which of the batch's executions are still in the started registry: one ZMSCORE (a member given
-- twice counts once). They leave it, and the worker's set, in one ZREM and one SREM once every
-- job's outcome is written. A script that fails keeps what it wrote, and a rewrite would find those
-- jobs stale: so every write that a key of another type could fail goes through heal (HEAL).
local members, present = {}, {}
for i = 1, njobs do
  local p = pos + (i - 1) * 12
  members[i] = ARGV[p] .. ':' .. ARGV[p + 1]
end
if njobs > 0 then
  local scores = redis.call('ZMSCORE', wip, unpack(members))
  for i = 1, njobs do
    if scores[i] and not present[members[i]] then present[members[i]] = i end
  end
end
for i = 1, njobs do
  local id, eid, outcome, ttl = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])
  local payload, attempts, delay = ARGV[pos + 4], ARGV[pos + 5], tonumber(ARGV[pos + 6])
  local retries_left, started, ended = ARGV[pos + 7], ARGV[pos + 8], ARGV[pos + 9]
  local started_iso, ended_iso = ARGV[pos + 10], ARGV[pos + 11]
  pos = pos + 12
  local member = members[i]
  local ek = 'rq:execution:' .. member
  local jk = 'rq:job:' .. id
  -- pcall: a job key that is not a hash reads as stale, not as a script error.
  if present[member] == i and redis.pcall('HGET', jk, 'status') == 'started' then
    -- This is the job's one live execution: its per-job execution index goes with it.
    table.insert(unlinks, ek)
    table.insert(unlinks, 'rq:executions:' .. id)
    out[i] = 1
    local rk = 'rq:results:' .. id
    if outcome == 'ok' then
      redis.call('HSET', jk, 'status', 'finished', 'started_at', started_iso, 'ended_at', ended_iso,
        'last_heartbeat', ended_iso, 'slimyq_attempts', attempts)
      if ttl ~= 0 then
        xadd(rk, 'type', '1', 'worker_name', w,
          'return_value', payload, 'execution_id', eid, 'execution_started_at', started,
          'execution_ended_at', ended)
      end
      if keep(jk, rk, 'rq:finished:' .. q, id, ttl, ended, 'finished') then added_finished = true end
    elseif outcome == 'fail' or outcome == 'stopped' then
      redis.call('HSET', jk, 'status', outcome == 'fail' and 'failed' or 'stopped', 'started_at', started_iso,
        'ended_at', ended_iso, 'last_heartbeat', ended_iso, 'slimyq_attempts', attempts,
        'retries_left', retries_left)
      xadd(rk, 'type', outcome == 'fail' and '2' or '3',
        'worker_name', w, 'exc_string', payload, 'execution_id', eid, 'execution_started_at', started,
        'execution_ended_at', ended)
      if keep(jk, rk, 'rq:failed:' .. q, id, ttl, ended, outcome == 'fail' and 'failed' or 'stopped') then
        added_failed = true
      end
    else
      if delay > 0 then
        redis.call('HSET', jk, 'status', 'scheduled', 'started_at', started_iso, 'ended_at', ended_iso,
          'slimyq_attempts', attempts, 'retries_left', retries_left)
        heal('ZADD', 'rq:scheduled:' .. q, now + delay, id)
      else
        redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso, 'started_at', started_iso,
          'ended_at', ended_iso, 'slimyq_attempts', attempts, 'retries_left', retries_left)
        table.insert(fronts, 1, id)
      end
    end
    if outcome ~= 'retry' then
      table.insert(ended_idx, i)
      table.insert(ended_deps, jk .. ':dependents')
    end
  else
    redis.call('UNLINK', ek)
    heal('ZREM', 'rq:executions:' .. id, eid)
    out[i] = 0
  end
end
-- Which ended jobs have dependents: one EXISTS for the batch, one per job only when some have.
if #ended_deps > 0 and redis.call('EXISTS', unpack(ended_deps)) > 0 then
  for k, key in ipairs(ended_deps) do
    if redis.call('EXISTS', key) == 1 then out[ended_idx[k]] = 2 end
  end
end
for registry, a in pairs(adds) do heal('ZADD', registry, unpack(a)) end
-- Retried at once: to the front of the queue, in the order given (one LPUSH of them reversed).
if #fronts > 0 then heal('LPUSH', 'rq:queue:' .. q, unpack(fronts)) end
if njobs > 0 then
  redis.call('ZREM', wip, unpack(members))
  heal('SREM', wexec, unpack(members))
end
-- Trim to the newest `keep` jobs kept for a finite time (result_ttl -1 jobs, score +inf, are never
-- trimmed), up to 1000 per call: a registry far over (keep lowered) shrinks over the next batches.
local function trim(registry, keep)
  local old
  if keep <= 1000 then
    old = redis.call('ZRANGE', registry, '(+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', keep, 1000)
  else
    local over = redis.call('ZCOUNT', registry, '-inf', '(+inf') - keep
    if over <= 0 then return end
    old = redis.call('ZRANGE', registry, 0, math.min(over, 1000) - 1)
  end
  if #old == 0 then return end
  redis.call('ZREM', registry, unpack(old))
  if grace > 0 then
    -- readable for the grace, then deleted by purge_trimmed
    local due = {}
    for _, id in ipairs(old) do
      table.insert(due, now + grace)
      table.insert(due, id)
    end
    trimmed_call('ZADD', q, unpack(due))
  else
    for _, id in ipairs(old) do
      table.insert(unlinks, 'rq:job:' .. id)
      table.insert(unlinks, 'rq:results:' .. id)
    end
  end
  return true
end
local trimmed = added_finished and trim('rq:finished:' .. q, keep_finished)
trimmed = (added_failed and trim('rq:failed:' .. q, keep_failed)) or trimmed
if trimmed then purge_trimmed(q, now, unlinks) end
-- (chunks: Lua's unpack takes a few thousand values at most)
for k = 1, #unlinks, 1000 do redis.call('UNLINK', unpack(unlinks, k, math.min(k + 999, #unlinks))) end
-- Metrics last, and best effort: a hand-written key of another type costs its increments only.
for i = 1, nstats do
  local key, field, kind, amount = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
  pos = pos + 4
  redis.pcall(kind == 'f' and 'HINCRBYFLOAT' or 'HINCRBY', key, field, amount)
end
redis.call('SET', done_key, cjson.encode(out), 'EX', 600)
return out
"""

class Scripts:
    """The registered scripts for one connection (EVALSHA, loaded on first use)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.enqueue = conn.register_script(ENQUEUE)
        self.claim = conn.register_script(CLAIM)
        self.complete = conn.register_script(COMPLETE)
        self.recover = conn.register_script(RECOVER)
        self.heartbeat = conn.register_script(HEARTBEAT)


def flatten(rows: list[list[Any]]) -> list[Any]:
    return [value for row in rows for value in row]
