"""Lua scripts of liveness: a worker's self-healing heartbeat and the recovery of the jobs of
workers that stopped, died or lapsed. Registered with the hot-path scripts in ``scripts.py``.

Key layout follows RQ 3 (see ``keys.py``); like the others, these scripts are for a single
Redis/Valkey server.
"""

from __future__ import annotations

# A write that meets a key of another type than RQ's or slimyq's (written by hand) would fail the
# script after what it had already written (Redis keeps it): heal replaces that key and writes again.
HEAL = """
local function heal(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.call('DEL', key)
    r = redis.call(cmd, key, ...)
  end
  return r
end
"""

# Jobs trimmed off a finished/failed registry stay readable for the trim's grace (``enqueue --wait``,
# an RQ client polling a result): COMPLETE and RECOVER put their ids in ``slimyq:trimmed:<queue>``,
# scored by when they go, instead of an EXPIRE per key (two per job), and purge_trimmed deletes
# those due that are still ended (or gone), up to 500 per call: COMPLETE calls it when it trimmed,
# the heartbeat on every beat (so an idle queue's go too). A claim or ``job requeue`` takes an id
# off it, as their PERSIST overrides an EXPIRE. ``into``: a list the caller UNLINKs (nil: at once).
# The set is slimyq's alone: one found of another type (written by hand) is replaced, never a
# reason for a claim, completion or beat to fail (the ids it held then expire by their own TTL).
TRIMMED = HEAL + """
local function trimmed_call(cmd, q, ...)
  return heal(cmd, 'slimyq:trimmed:' .. q, ...)
end
local ended = {finished = true, failed = true, stopped = true}
local function purge_trimmed(q, now, into)
  local due = trimmed_call('ZRANGE', q, '-inf', now, 'BYSCORE', 'LIMIT', 0, 500)
  if #due == 0 then return end
  local ks = {}
  for _, id in ipairs(due) do
    -- Only a job still ended (or gone) goes: an id enqueued again meanwhile (deleted, or expired by
    -- its own TTL, then reused) is another job; a key of another type is not slimyq's to delete.
    local jk = 'rq:job:' .. id
    local status = redis.pcall('HGET', jk, 'status')
    if ended[status] or (status == false and redis.call('EXISTS', jk) == 0) then
      table.insert(ks, jk)
      table.insert(ks, 'rq:results:' .. id)
    end
  end
  trimmed_call('ZREM', q, unpack(due))
  if #ks == 0 then return end
  if into then
    for _, k in ipairs(ks) do table.insert(into, k) end
  else
    redis.call('UNLINK', unpack(ks))
  end
end
"""


# Put jobs a worker holds back on their queue, or retry/fail them when the worker died.
# ARGV: 1 queue, 2 mode ('release' | 'dead' | 'expired' | 'orphans'), 3 worker ('' for expired),
#       4 now float, 5 now (RQ time), 6 default retries, 7 b64(zlib(message)) for failures,
#       8 default failure ttl (a job's own failure_ttl wins), 9 keep_failed, 10 message text,
#       11.. members (orphans only).
# release: the worker is alive and stopping; its jobs go back to the front of the queue as they
#          were (no attempt is counted).
# dead:    the worker process is gone (its supervisor saw it die): each job counts a failed
#          attempt and is retried at once, or failed when no retries are left.
# expired: started-registry entries past their deadline whose worker key has expired.
# orphans: the given executions of a live worker that never received them (a claim whose reply
#          was lost): back to the front of the queue as they were, like release.
# Returns the ids handled.
RECOVER = TRIMMED + """
local q, mode, w = ARGV[1], ARGV[2], ARGV[3]
local now, iso, default_retries = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local exc, failure_ttl, keep_failed, message = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local wip = 'rq:wip:' .. q
local qkey = 'rq:queue:' .. q
local handled = {}
local members = {}
-- A job key that is not a hash (written by anything) reads as absent: it must not stop the
-- recovery of every other job in the queue.
local function hget(key, field)
  local v = redis.pcall('HGET', key, field)
  if type(v) == 'table' then return false end
  return v
end
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
    local owner = hget('rq:job:' .. id, 'worker_name')
    if not owner or redis.call('EXISTS', 'rq:worker:' .. owner) == 0 then
      table.insert(members, m)
    end
  end
elseif mode == 'orphans' then
  for i = 11, #ARGV do table.insert(members, ARGV[i]) end
else
  return_claims(w)
  members = redis.call('SMEMBERS', 'rq:worker:' .. w .. ':executions')
  -- The executions set is RQ's too (its monitors prune it): the started registry and the job's
  -- worker_name are the record recovery trusts, so a pruned member is still found.
  local seen = {}
  for _, m in ipairs(members) do seen[m] = true end
  for _, m in ipairs(redis.call('ZRANGE', wip, 0, -1)) do
    if not seen[m] then
      local id = string.match(m, '^(.*):[^:]*$') or m
      if redis.pcall('HGET', 'rq:job:' .. id, 'worker_name') == w then table.insert(members, m) end
    end
  end
end
-- Execution ids sort in claim order (a worker's ids count up): walking them from the last claimed
-- to the first and pushing each to the front puts them back in the order they had in the queue.
local function eid(m) return string.match(m, ':([^:]*)$') or '' end
table.sort(members, function(a, b) return eid(a) > eid(b) end)
local failed_any = false
for _, m in ipairs(members) do
  local id, eid = string.match(m, '^(.*):([^:]*)$')
  id = id or m
  local jk = 'rq:job:' .. id
  local owner = hget(jk, 'worker_name')
  if owner then redis.call('SREM', 'rq:worker:' .. owner .. ':executions', m) end
  redis.call('UNLINK', 'rq:execution:' .. m)
  if eid then redis.call('ZREM', 'rq:executions:' .. id, eid) end
  if redis.call('ZREM', wip, m) == 1 and hget(jk, 'status') == 'started' then
    table.insert(handled, id)
    if mode == 'release' or mode == 'orphans' then
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso)
      redis.call('LPUSH', qkey, id)
    else
      local attempts = {}
      local raw = hget(jk, 'slimyq_attempts')
      if raw then
        local ok, decoded = pcall(cjson.decode, raw)
        if ok and type(decoded) == 'table' then attempts = decoded end
      end
      local started = hget(jk, 'started_at')
      local number = 1
      for _, a in ipairs(attempts) do
        if type(a) ~= 'table' or a.tries == nil then number = number + 1 end
      end
      table.insert(attempts, {attempt = number, startedAt = started, endedAt = iso,
        outcome = 'abandoned', error = message})
      local left = tonumber(hget(jk, 'retries_left') or default_retries) or default_retries
      if left > 0 then
        redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso, 'retries_left', left - 1,
          'slimyq_attempts', cjson.encode(attempts))
        redis.call('LPUSH', qkey, id)
      else
        redis.call('HSET', jk, 'status', 'failed', 'ended_at', iso, 'slimyq_attempts', cjson.encode(attempts))
        local rk = 'rq:results:' .. id
        heal('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '2', 'worker_name', owner or '', 'exc_string', exc)
        -- The job's own failure_ttl, as RQ means it (as COMPLETE keeps a failure): -1 forever,
        -- 0 not at all, N seconds; unset or unreadable: the default.
        local fttl = tonumber(hget(jk, 'failure_ttl') or '')
        if not fttl or fttl ~= math.floor(fttl) or fttl >= 1e15 then fttl = failure_ttl end
        if fttl < 0 then
          redis.call('PERSIST', rk)
          redis.call('PERSIST', jk)
          redis.call('ZADD', 'rq:failed:' .. q, '+inf', id)
        elseif fttl == 0 then
          redis.call('UNLINK', jk, rk)
        else
          redis.call('EXPIRE', rk, fttl)
          redis.call('EXPIRE', jk, fttl)
          redis.call('ZADD', 'rq:failed:' .. q, math.floor(now) + fttl, id)
          failed_any = true
        end
      end
    end
  end
end
if mode == 'release' or mode == 'dead' then redis.call('DEL', 'rq:worker:' .. w .. ':executions') end
-- Failures written here are trimmed to keep_failed like the ones COMPLETE writes: only those kept
-- for a finite time count and go (failure_ttl -1 jobs, score +inf, sort last and are never trimmed).
local fkey = 'rq:failed:' .. q
local over = failed_any and redis.call('ZCOUNT', fkey, '-inf', '(+inf') - keep_failed or 0
if over > 0 then
  local due = {}
  for _, id in ipairs(redis.call('ZRANGE', fkey, 0, over - 1)) do
    table.insert(due, now + 30)  -- readable for the trim grace, as COMPLETE's trimmed jobs are
    table.insert(due, id)
  end
  redis.call('ZREMRANGEBYRANK', fkey, 0, over - 1)
  for k = 1, #due, 1000 do trimmed_call('ZADD', q, unpack(due, k, math.min(k + 999, #due))) end
end
return handled
"""


# A worker's heartbeat, self-healing. ARGV: 1 queue, 2 worker, 3 ttl, 4 now (RQ time), 5 state,
# 6 deadline, 7 execution record TTL, 8 now (float), 9 n registration values, then field, value
# pairs, then the members it holds.
# Keeps the worker key, its hash fields, its registry and claim-set memberships and its
# executions set as they were at registration, whatever expired or was removed meanwhile (a
# stalled process, a long outage), and moves the deadline of every execution it still holds.
# Each execution still held gets RQ's ``Execution.heartbeat``: its hash (recreated if it expired
# meanwhile), its entry in ``rq:executions:<job>`` and the job's ``last_heartbeat``. A member no
# longer in the started registry (completed, recovered, deleted) is never touched.
# Returns the members that are no longer in the started registry (taken over by a recovery), but
# not those of jobs canceled meanwhile (RQ's cancel removes the execution: the attempt runs on).
HEARTBEAT = TRIMMED + """
local q, w, ttl, iso = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local wk = 'rq:worker:' .. w
local wexec = wk .. ':executions'
local wip = 'rq:wip:' .. q
local rttl, nowf = tonumber(ARGV[7]), ARGV[8]
local nreg = tonumber(ARGV[9])
local first = 10 + nreg
if redis.call('EXISTS', wk) == 0 and nreg > 0 then
  redis.call('HSET', wk, unpack(ARGV, 10, 9 + nreg))
  for i = first, #ARGV do redis.call('SADD', wexec, ARGV[i]) end
end
redis.call('HSET', wk, 'last_heartbeat', iso, 'state', ARGV[5])
redis.call('EXPIRE', wk, ttl)
redis.call('SADD', 'rq:workers', wk)
redis.call('SADD', 'rq:workers:' .. q, wk)
redis.call('SADD', 'slimyq:claims:' .. q, w)
if redis.call('EXISTS', wexec) == 1 then redis.call('EXPIRE', wexec, ttl) end
local lost = {}
for i = first, #ARGV do
  local m = ARGV[i]
  if redis.call('ZADD', wip, 'XX', 'CH', ARGV[6], m) == 0 and not redis.call('ZSCORE', wip, m) then
    -- RQ's Job.cancel() takes the execution out of the started registry too: a canceled job was
    -- not taken over, its attempt runs to its end (and COMPLETE discards the result).
    local id = string.match(m, '^(.*):[^:]*$') or m
    if redis.pcall('HGET', 'rq:job:' .. id, 'status') ~= 'canceled' then table.insert(lost, m) end
  else
    local id, eid = string.match(m, '^(.*):([^:]*)$')
    local ek = 'rq:execution:' .. m
    redis.call('HSET', ek, 'id', eid, 'job_id', id, 'last_heartbeat', nowf, 'worker_name', w)
    redis.call('HSETNX', ek, 'created_at', nowf)
    redis.call('EXPIRE', ek, rttl)
    redis.call('ZADD', 'rq:executions:' .. id, tonumber(nowf) + rttl + 60, eid)
    redis.call('EXPIRE', 'rq:executions:' .. id, rttl + 60)
    if redis.call('EXISTS', 'rq:job:' .. id) == 1 then
      redis.call('HSET', 'rq:job:' .. id, 'last_heartbeat', iso)
    end
  end
end
purge_trimmed(q, nowf)
return lost
"""
