"""Per-user rate limit for rate-limited job types (chat), checked at enqueue.

A fixed window per user: the first admitted request opens a window of ``rate_limit.window``
seconds (the key's TTL, set once with ``PEXPIRE`` only when the key has none), and at most
``rate_limit.requests`` requests are admitted in it. The check and the count happen in one Lua
script: atomic across every producer sharing the Redis, one round trip. A refused request counts
nothing and leaves the window alone, so hammering while limited never extends it.

Key: ``slimyq:rl:<user>`` (a counter). ``reset`` deletes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from slimyq.config import Settings
from slimyq.errors import RateLimited, UsageError
from slimyq.jobs.registry import JobType
from slimyq.payloads.common import Payload

PREFIX = "slimyq:rl:"

# KEYS: one counter per user. ARGV: 1 limit, 2 window (ms), 2+i count for KEYS[i], then a token.
# Returns {1, 0, 0} when all were admitted (and counted), else {0, i, ttl_ms} for the first user
# that would go over the limit (nothing counted for anyone). The token remembers an admission for
# the window: a call redis-py repeats after a lost reply is admitted again without counting twice.
_ADMIT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local token = 'slimyq:admitted:' .. ARGV[#KEYS + 3]
if redis.call('EXISTS', token) == 1 then return {1, 0, 0} end
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if current + tonumber(ARGV[2 + i]) > limit then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = window end
    return {0, i, ttl}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[2 + i])
  if redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, window)
  end
end
redis.call('SET', token, '1', 'PX', window)
return {1, 0, 0}
"""

# KEYS: the user's counter. Returns {count, ttl_ms}.
_SHOW = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
return {count, redis.call('PTTL', KEYS[1])}
"""


class UserRateLimited(RateLimited):
    """:class:`RateLimited` naming the user that hit the limit."""

    def __init__(self, retry_in: int, user: str) -> None:
        super().__init__(retry_in)
        self.user = user


@dataclass(frozen=True)
class RateLimitStatus:
    user: str
    count: int  # requests admitted in the current window
    limit: int
    window: int  # seconds
    resets_in: int  # seconds until the window ends (0: no window open)

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)


def key(user: str) -> str:
    return f"{PREFIX}{user}"


def _seconds(ttl_ms: int) -> int:
    return max(math.ceil(ttl_ms / 1000), 1)


def user_of(payload: Payload) -> str | None:
    user = getattr(payload, "user_id", None)
    return str(user) if user is not None else None


def admit(conn: redis.Redis, settings: Settings, job_type: JobType, payload: Payload) -> None:
    """Count one request of ``job_type`` for the payload's user, or raise :class:`RateLimited`.

    Job types that are not rate limited, and payloads without a user, pass uncounted.
    """
    if not job_type.rate_limited:
        return
    user = user_of(payload)
    if user is not None:
        admit_many(conn, settings, {user: 1})


def admit_many(conn: redis.Redis, settings: Settings, counts: Mapping[str, int]) -> None:
    """Count ``counts[user]`` requests for every user, all or nothing (a bulk file).

    Raises :class:`RateLimited` (exit 75) if any user would go over the limit, counting nothing;
    :class:`UsageError` if one file alone holds more requests for a user than a whole window allows.
    """
    counts = {user: n for user, n in counts.items() if n > 0}
    if not counts:
        return
    limit, window = settings.rate_limit.requests, settings.rate_limit.window
    for user, n in counts.items():
        if n > limit:
            raise UsageError(
                f"{n} rate-limited requests for user {user!r} at once, but the limit is {limit} per "
                f"{window} s; split them into batches of at most {limit}"
            )
    users = list(counts)
    args: list[Any] = [limit, window * 1000, *(counts[u] for u in users), os.urandom(12).hex()]
    reply: Any = conn.register_script(_ADMIT)(keys=[key(u) for u in users], args=args)
    ok, index, ttl_ms = (int(v) for v in reply)
    if not ok:
        raise UserRateLimited(_seconds(ttl_ms), users[index - 1])


def show(conn: redis.Redis, settings: Settings, user: str) -> RateLimitStatus:
    """The user's count in the current window and when it resets."""
    reply: Any = conn.register_script(_SHOW)(keys=[key(user)])
    count, ttl_ms = int(reply[0]), int(reply[1])
    resets_in = _seconds(ttl_ms) if ttl_ms > 0 else 0
    limit, window = settings.rate_limit.requests, settings.rate_limit.window
    return RateLimitStatus(user=user, count=count, limit=limit, window=window, resets_in=resets_in)


def reset(conn: redis.Redis, settings: Settings, user: str) -> bool:
    """Forget the user's window; True if there was one."""
    return bool(conn.delete(key(user)))
