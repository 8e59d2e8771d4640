"""``slimyq check``: one line per problem, for cron, systemd and container health probes.

Errors make the check fail (exit 1): Redis or the database unreachable, a queue with jobs but no
live worker, the oldest queued job older than ``max_age``, a backlog over ``max_backlog``, a
failure rate over ``max_failure_rate`` (cumulative counters), started jobs whose worker is gone.
Warnings do not: a paused queue (its backlog and missing workers are then expected), chat in
fallback mode (no API key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from slimyq.config import Settings
from slimyq.inspect._common import job_id_of, text
from slimyq.inspect.stats import queue_stats
from slimyq.redact import redact_text
from slimyq.runtime import keys
from slimyq.text import count

STUCK_SCAN = 1000  # started-registry entries read per queue (the registry holds in-flight jobs)


@dataclass(frozen=True)
class Problem:
    level: str  # error | warning
    check: str
    message: str
    queue: str | None = None


@dataclass
class Health:
    healthy: bool
    problems: list[Problem] = field(default_factory=list)
    queues: int = 0
    workers: int = 0


def stuck_jobs(conn: redis.Redis, queue: str) -> list[str]:
    """Started jobs of ``queue`` whose worker key is gone (expired or unregistered)."""
    members = [text(m) or "" for m in conn.zrange(keys.started(queue), 0, STUCK_SCAN - 1)]
    if not members:
        return []
    ids = [job_id_of(m) for m in members]
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "worker_name")
    owners = [text(w) or "" for w in pipe.execute()]
    pipe = conn.pipeline(transaction=False)
    for owner in owners:
        pipe.hmget(keys.worker(owner), "death", "pid")
    alive = [values[0] is None and values[1] is not None for values in pipe.execute()]
    return [job_id for job_id, ok in zip(ids, alive, strict=True) if not ok]


def _database(settings: Settings) -> Problem | None:
    try:
        from slimyq.db import connect_url

        db = connect_url(settings.effective_database_url)
        try:
            db.execute_sql("SELECT 1")  # type: ignore[no-untyped-call]
        finally:
            db.close()
    except Exception as exc:  # any failure is "unreachable", reported in one line
        from slimyq.errors import SlimyqError

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        text = first if isinstance(exc, SlimyqError) else f"database unreachable: {first}"
        return Problem("error", "database", redact_text(text))
    return None


def check(
    settings: Settings,
    connect: Callable[[], redis.Redis],
    *,
    max_age: float | None = 300.0,
    max_backlog: int | None = None,
    max_failure_rate: float | None = None,
    database: bool = True,
) -> Health:
    """Run every check; ``connect`` opens Redis (its failure is one problem, not a traceback)."""
    problems: list[Problem] = []
    health = Health(healthy=True, problems=problems, queues=len(settings.queue_names))
    conn: Any = None
    try:
        conn = connect()
    except Exception as exc:  # Unreachable, or a redis error escaping connect()
        problems.append(Problem("error", "redis", redact_text(str(exc).strip().splitlines()[0])))
    if conn is not None:
        try:
            _queues(conn, settings, problems, health, max_age, max_backlog, max_failure_rate)
            _history(conn, settings, problems)
        except redis.RedisError as exc:
            problems.append(Problem("error", "redis", redact_text(f"lost the connection to Redis ({exc})")))
    if database:
        problem = _database(settings)
        if problem:
            problems.append(problem)
    if "chat" in settings.queues and not settings.chat.api_key:
        problems.append(Problem("warning", "chat", "chat runs in fallback mode: no API key "
                                "(set OPENAI_API_KEY); replies are the fixed fallback text", "chat"))
    health.healthy = not any(p.level == "error" for p in problems)
    return health


def _queues(conn: redis.Redis, settings: Settings, problems: list[Problem], health: Health,
            max_age: float | None, max_backlog: int | None, max_failure_rate: float | None) -> None:
    for s in queue_stats(conn, settings):
        health.workers += s.workers
        q = s.queue
        waiting = s.queued + s.scheduled
        if s.paused:
            problems.append(Problem("warning", "paused", f"queue {q} is paused with {count(s.queued, 'job')} queued "
                                    f"(slimyq queue resume {q})", q))
        elif s.queued and s.workers == 0:
            problems.append(Problem("error", "workers", f"queue {q} has {count(s.queued, 'job')} queued but no live "
                                    "worker (start: slimyq worker " + q + ")", q))
        elif waiting and s.workers == 0 and s.scheduled:
            problems.append(Problem("warning", "workers", f"queue {q} has {count(s.scheduled, 'scheduled job')} but no "
                                    "live worker", q))
        if not s.paused and max_age is not None and s.oldest_age_seconds is not None \
                and s.oldest_age_seconds > max_age:
            problems.append(Problem("error", "age", f"queue {q}: oldest queued job waited "
                                    f"{_human(s.oldest_age_seconds)} (max {_human(max_age)})", q))
        if max_backlog is not None and s.queued > max_backlog:
            problems.append(Problem("error", "backlog", f"queue {q}: {count(s.queued, 'job')} queued "
                                    f"(max {max_backlog})", q))
        if max_failure_rate is not None and s.success_rate is not None \
                and 100 - s.success_rate > max_failure_rate:
            problems.append(Problem("error", "failures", f"queue {q}: failure rate {100 - s.success_rate:.1f}% "
                                    f"(max {max_failure_rate:g}%)", q))
        if s.started:
            stuck = stuck_jobs(conn, q)
            if stuck:
                shown = ", ".join(stuck[:3]) + (" ..." if len(stuck) > 3 else "")
                problems.append(Problem("error", "stuck", f"queue {q}: {count(len(stuck), 'started job')} whose worker "
                                        f"is gone: {shown} (slimyq job requeue ID)", q))


def _history(conn: redis.Redis, settings: Settings, problems: list[Problem]) -> None:
    """Workers report job-history rows they had to drop (database down longer than the buffer)."""
    if not settings.history:
        return
    from slimyq.runtime import keys

    counts: Any = conn.hgetall(keys.HISTORY_DROPPED)
    dropped = sum(int(v) for v in counts.values())
    if dropped:
        problems.append(Problem("warning", "history", f"job history: {count(dropped, 'run record')} dropped while "
                                "the database was unreachable (stats --since and jobs --history miss them)"))


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.1f}m"
    return f"{seconds:.0f}s"
