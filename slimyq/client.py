"""``slimyq.Client``: enqueue jobs and read their status from Python, as the CLI does.

The same code path as ``slimyq enqueue`` and ``slimyq job show``: payloads validated by the job
type's model (nothing is sent when one field is bad), the per-user rate limit decided atomically
by the ENQUEUE script, idempotent job ids, RQ's own job format. One client is thread-safe and
keeps a connection pool; make one per process and share it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from slimyq import _clientcore as core
from slimyq import producer, ratelimit
from slimyq._clientcore import JobSpec, PayloadLike
from slimyq.config import Settings
from slimyq.inspect.jobs import JobDetail, job_detail, read_job
from slimyq.inspect.stats import QueueStats, queue_stats
from slimyq.jobs.registry import JobType
from slimyq.obs import ops
from slimyq.producer import Enqueued
from slimyq.runtime import keys
from slimyq.runtime.codec import JOB_ID
from slimyq.runtime.scripts import Scripts

if TYPE_CHECKING:
    import redis


class Client:
    """A slimyq producer and job reader.

    ``Client()`` takes the CLI's settings (environment, ``.env``, TOML config file, defaults);
    ``redis_url``/``database_url`` override them, ``settings`` replaces them. ``connection`` is an
    existing ``redis.Redis`` to use (the client then does not close it). Redis is connected on
    first use: an unreachable server raises :class:`slimyq.errors.Unreachable` saying what to fix.
    """

    def __init__(self, redis_url: str | None = None, database_url: str | None = None, *,
                 config_file: str | Path | None = None, settings: Settings | None = None,
                 connection: redis.Redis | None = None) -> None:
        self.settings: Settings = core.settings_for(redis_url, database_url, config_file, settings)
        self._conn = connection
        self._owned = connection is None
        self._scripts: Scripts | None = Scripts(connection) if connection is not None else None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ connection

    @property
    def redis(self) -> redis.Redis:
        """The Redis client (connected and PINGed on first use, then shared by every thread)."""
        if self._conn is None:
            with self._lock:
                if self._conn is None:
                    from slimyq.redis import connect

                    conn = connect(self.settings)
                    self._scripts = Scripts(conn)
                    self._conn = conn
        return self._conn

    def _script_set(self) -> Scripts:
        conn = self.redis
        return self._scripts or Scripts(conn)

    def close(self) -> None:
        """Close the connection pool (not a ``connection`` passed in)."""
        if self._conn is not None and self._owned:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ enqueue

    @core.translated
    def enqueue(self, job_type: str | JobType, payload: PayloadLike, *, job_id: str | None = None,
                queue: str | None = None, delay: float | dt.timedelta | None = None,
                at: dt.datetime | None = None) -> Enqueued:
        """Put one job on its queue and return its :class:`~slimyq.producer.Enqueued` (``id``,
        ``queue``, ``status``: ``queued``, ``scheduled`` or ``exists``).

        ``job_type`` is a registered name (``create_conversation`` or ``create-conversation``),
        ``payload`` a mapping of its fields (camelCase or snake_case) or a payload model.
        ``job_id`` makes the call idempotent: an id that exists enqueues nothing and returns status
        ``exists``. ``queue`` is for job types that run on any queue (the canary). ``delay``
        (seconds or a timedelta) or ``at`` (a datetime; naive means UTC) schedules the job.

        Raises :class:`slimyq.ValidationError` (nothing enqueued; ``.errors`` names each field),
        :class:`slimyq.RateLimited` (``.retry_after`` seconds) or :class:`slimyq.errors.Unreachable`.
        """
        req = core.request(self.settings, job_type, payload, job_id=job_id, queue=queue, delay=delay, at=at)
        return producer.enqueue_one(self.redis, self.settings, req, scripts=self._script_set())

    @core.translated
    def enqueue_many(self, items: Iterable[tuple[str, PayloadLike] | JobSpec]) -> list[Enqueued]:
        """Enqueue many jobs: ``(type, payload)`` pairs or :class:`~slimyq.JobSpec` objects.

        All are validated first: one bad item raises :class:`slimyq.ValidationError` listing every
        problem (``item N: field: problem``) and nothing is enqueued. Then the users' rate limits
        are checked for the whole batch (:class:`slimyq.RateLimited`, nothing enqueued), and the
        jobs are sent pipelined, 500 per round trip, in order.
        """
        reqs = core.requests(self.settings, items)
        counts = ratelimit.batch_counts((r.job_type, r.payload) for r in reqs)
        if counts:
            try:
                ratelimit.precheck(self.redis, self.settings, counts)
            except ratelimit.UserRateLimited as exc:
                ops.count_rejections(self.redis, ratelimit.turned_away(reqs, exc.user))
                raise
        return list(producer.enqueue_many(self.redis, self.settings, reqs, scripts=self._script_set()))

    # ------------------------------------------------------------ results and status

    @core.translated
    def wait(self, job_id: str, timeout: float = 30.0) -> Any:
        """Block until the job ends and return its handler's result.

        Raises :class:`slimyq.JobFailed` (``.error``, ``.error_type``, ``.attempts``) when it failed
        for good, and :class:`slimyq.JobTimeout` (a :class:`TimeoutError`) when it has not ended
        within ``timeout`` seconds; the job then stays on its queue.
        """
        conn = self.redis
        outcome = producer.wait_for(conn, job_id, timeout)
        if outcome.status == "finished":
            return outcome.result
        fields: Any = conn.hmget(keys.job(job_id), *core.WAIT_FIELDS)
        raise core.end_error(job_id, timeout, outcome, fields)

    @core.translated
    def job(self, job_id: str, user: str | None = None, *, traceback: bool = False) -> JobDetail | None:
        """The job's :class:`~slimyq.inspect.jobs.JobDetail` (type, queue, status, user, payload with
        secrets redacted, attempts, result or error, times), or None when Redis holds no such job.
        With ``user``, another user's job is None too: exactly like a missing one."""
        if not JOB_ID.match(job_id):
            return None
        pipe = self.redis.pipeline(transaction=False)
        read_job(pipe, job_id)
        return job_detail(job_id, pipe.execute(), user=user, traceback=traceback)

    @core.translated
    def stats(self, queues: list[str] | None = None, *, by_type: bool = False) -> list[QueueStats]:
        """What ``slimyq stats`` shows: one :class:`~slimyq.inspect.stats.QueueStats` per queue
        (counts per state, workers, throughput, durations); ``by_type`` adds each job type's."""
        return queue_stats(self.redis, self.settings, queues, by_type=by_type)

