"""Per-user rate limit for rate-limited job types (chat), decided at enqueue.

A fixed window per user: the first admitted request opens a window of ``rate_limit.window``
seconds (the key's TTL, set once with ``PEXPIRE`` only when the key has none), and at most
``rate_limit.requests`` requests are admitted in it. The check and the count happen inside the
ENQUEUE script (:mod:`slimyq.runtime.scripts`) that writes the jobs, so they are atomic across every
producer sharing the Redis, and only a job that is really written takes a slot: a duplicate
``--job-id`` (or an enqueue that fails) counts nothing. A refused request counts nothing and leaves
the window alone, so hammering while limited never extends it.

Key: ``slimyq:rl:<user>`` (a counter). ``reset`` deletes it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from slimyq.config import Settings
from slimyq.errors import RateLimited, ValidationFailed
from slimyq.jobs.registry import JobType
from slimyq.payloads.common import Payload, payload_user

PREFIX = "slimyq:rl:"

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


def counter_key(job_type: JobType, payload: Payload) -> str:
    """The counter a job of ``job_type`` takes a slot of ('' for types that are not rate limited
    and payloads without a user): what the ENQUEUE script is given per job."""
    if not job_type.rate_limited:
        return ""
    user = payload_user(payload)
    return key(user) if user is not None else ""


def script_args(settings: Settings) -> list[Any]:
    """The ENQUEUE script's limit arguments: requests per window, window in milliseconds."""
    return [settings.rate_limit.requests, settings.rate_limit.window * 1000]


def refused(ttl_ms: int, user: str) -> UserRateLimited:
    return UserRateLimited(_seconds(ttl_ms), user)


def turned_away(requests: Iterable[Any], user: str) -> Counter[tuple[str, str]]:
    """What a refusal of ``user`` turned away, per (queue, job type): that user's requests of
    rate-limited types (the metric's count; other jobs of the same batch are not rejections)."""
    return Counter((r.queue, r.job_type.name) for r in requests
                   if r.job_type.rate_limited and payload_user(r.payload) == user)


def precheck(conn: redis.Redis, settings: Settings, counts: Mapping[str, int]) -> None:
    """Before a bulk file is enqueued: refuse it at once if a user could not get all its requests
    now (:class:`RateLimited`, exit 75), or could never in one window (:class:`~slimyq.errors.ValidationFailed`).

    Reads only; the slots are taken chunk by chunk by the ENQUEUE script itself.
    """
    wanted = precheck_counts(settings, counts)
    pipe = conn.pipeline(transaction=False)
    precheck_reads(pipe, wanted)
    precheck_decide(settings, wanted, pipe.execute())  # one round trip for any number of users


def batch_counts(requests: Iterable[tuple[JobType, Payload]]) -> dict[str, int]:
    """Rate-limited requests per user in a batch of (job type, payload)."""
    counts: dict[str, int] = {}
    for job_type, payload in requests:
        user = payload_user(payload)
        if job_type.rate_limited and user is not None:
            counts[user] = counts.get(user, 0) + 1
    return counts


def precheck_counts(settings: Settings, counts: Mapping[str, int]) -> dict[str, int]:
    """The users to check; :class:`ValidationFailed` (``slimyq.ValidationError``) for a batch in
    which one user asks more than a whole window allows: no wait would let it through."""
    counts = {user: n for user, n in counts.items() if n > 0}
    limit, window = settings.rate_limit.requests, settings.rate_limit.window
    too_many = [f"userId: {n} rate-limited requests for user {user!r} at once, but the limit is {limit} per "
                f"{window} s; split them into batches of at most {limit}" for user, n in counts.items() if n > limit]
    if too_many:
        raise ValidationFailed(too_many)
    return counts


def precheck_reads(pipe: Any, counts: Mapping[str, int]) -> None:
    """Queue the reads of :func:`precheck_decide` on a pipeline (sync or asyncio)."""
    for user in counts:
        pipe.get(key(user))
        pipe.pttl(key(user))


def precheck_decide(settings: Settings, counts: Mapping[str, int], replies: list[Any]) -> None:
    limit, window = settings.rate_limit.requests, settings.rate_limit.window
    for i, user in enumerate(counts):
        used, ttl_ms = int(replies[2 * i] or 0), int(replies[2 * i + 1])
        if used + counts[user] > limit:
            raise UserRateLimited(_seconds(ttl_ms if ttl_ms > 0 else window * 1000), user)


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
