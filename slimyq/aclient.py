"""``slimyq.AsyncClient``: :class:`slimyq.Client`'s methods as coroutines, for ASGI applications.

It shares everything but the I/O with the synchronous client: request validation
(:mod:`slimyq._clientcore`), the ENQUEUE script's arguments and replies
(:func:`slimyq.producer.encode_chunk` / :func:`~slimyq.producer.decode_chunk`), the rate-limit
precheck, the result-stream reading and the job reading (:mod:`slimyq.inspect.jobs`). Redis is
reached through ``redis.asyncio``; ``stats()`` runs the synchronous reader in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from slimyq import _clientcore as core
from slimyq import producer, ratelimit
from slimyq._clientcore import JobSpec, PayloadLike
from slimyq.config import Settings
from slimyq.inspect.jobs import JobDetail, job_detail, read_job
from slimyq.inspect.stats import QueueStats
from slimyq.jobs.registry import JobType
from slimyq.producer import Enqueued, EnqueueRequest
from slimyq.runtime import keys
from slimyq.runtime.codec import JOB_ID
from slimyq.runtime.scripts import ENQUEUE

if TYPE_CHECKING:
    import redis.asyncio

    from slimyq.client import Client

CHUNK = 500


class AsyncClient:
    """An asyncio slimyq producer and job reader; use it as ``async with AsyncClient() as c``, or
    call :meth:`aclose`. The arguments are :class:`slimyq.Client`'s. Safe to share between the
    tasks of one event loop (redis.asyncio pools its connections)."""

    def __init__(self, redis_url: str | None = None, database_url: str | None = None, *,
                 config_file: str | Path | None = None, settings: Settings | None = None,
                 connection: redis.asyncio.Redis | None = None) -> None:
        self.settings: Settings = core.settings_for(redis_url, database_url, config_file, settings)
        self._conn = connection
        self._owned = connection is None
        self._script: Any = connection.register_script(ENQUEUE) if connection is not None else None
        self._lock = asyncio.Lock()
        self._sync: Client | None = None
        self._twin: Any = None  # the sync twin of a connection passed in (see _sync_twin)

    async def redis(self) -> redis.asyncio.Redis:
        """The asyncio Redis client, connected and PINGed on first use."""
        if self._conn is None:
            async with self._lock:
                if self._conn is None:
                    from slimyq.redis import async_connect

                    conn = await async_connect(self.settings)
                    self._script = conn.register_script(ENQUEUE)
                    self._conn = conn
        return self._conn

    async def aclose(self) -> None:
        if self._conn is not None and self._owned:
            await self._conn.aclose()
            self._conn = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self._twin is not None:
            self._twin.close()
            self._twin = None

    async def __aenter__(self) -> AsyncClient:
        await self.redis()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # ------------------------------------------------------------ enqueue

    @core.atranslated
    async def enqueue(self, job_type: str | JobType, payload: PayloadLike, *, job_id: str | None = None,
                      queue: str | None = None, delay: float | dt.timedelta | None = None,
                      at: dt.datetime | None = None) -> Enqueued:
        """:meth:`slimyq.Client.enqueue`, as a coroutine."""
        req = core.request(self.settings, job_type, payload, job_id=job_id, queue=queue, delay=delay, at=at)
        done = await self._send([req])
        return done[0]

    @core.atranslated
    async def enqueue_many(self, items: Iterable[tuple[str, PayloadLike] | JobSpec]) -> list[Enqueued]:
        """:meth:`slimyq.Client.enqueue_many`, as a coroutine: validated first, all or nothing."""
        reqs = core.requests(self.settings, items)
        counts = ratelimit.precheck_counts(
            self.settings, ratelimit.batch_counts((r.job_type, r.payload) for r in reqs))
        conn = await self.redis()
        if counts:
            pipe = conn.pipeline(transaction=False)
            ratelimit.precheck_reads(pipe, counts)
            try:
                ratelimit.precheck_decide(self.settings, counts, await pipe.execute())
            except ratelimit.UserRateLimited as exc:
                await self._count_rejections(ratelimit.turned_away(reqs, exc.user))
                raise
        out: list[Enqueued] = []
        for start in range(0, len(reqs), CHUNK):
            out += await self._send(reqs[start:start + CHUNK])
        return out

    async def _send(self, batch: list[EnqueueRequest]) -> list[Enqueued]:
        conn = await self.redis()
        chunk = producer.encode_chunk(self.settings, batch)
        if len(chunk.calls) == 1:
            replies = [await self._script(args=chunk.calls[0])]
        else:  # as producer._evalsha_all: no SCRIPT EXISTS first (redis.asyncio's pipelines send one)
            replies = [None] * len(chunk.calls)
            todo = list(range(len(chunk.calls)))
            for attempt in range(2):
                pipe = conn.pipeline(transaction=False)
                for i in todo:
                    pipe.evalsha(self._script.sha, 0, *chunk.calls[i])
                todo = producer.sort_replies(todo, await pipe.execute(raise_on_error=False), replies, attempt == 0)
                if not todo:
                    break
                self._script.sha = await conn.script_load(ENQUEUE)
        decoded = producer.decode_chunk(chunk, replies)
        done = decoded.done
        if decoded.limited is not None:
            await self._count_rejections(ratelimit.turned_away(decoded.refused, decoded.limited.user))
        wanted = self.settings.redis_wait_replicas
        if wanted and done:
            acked = int(await conn.wait(wanted, int(self.settings.redis_wait_timeout * 1000)))
            producer.check_replicas(self.settings, acked, len(done))
        if decoded.limited is not None:
            raise decoded.limited
        return done

    async def _count_rejections(self, refused: Mapping[tuple[str, str], int]) -> None:
        """:func:`slimyq.obs.ops.count_rejections` on this client's connection (best effort)."""
        import redis

        from slimyq.obs import ops

        if not refused:
            return
        conn = await self.redis()
        with contextlib.suppress(redis.RedisError):
            pipe = conn.pipeline(transaction=False)
            for key, field, n in ops.rejection_increments(refused):
                pipe.hincrby(key, field, n)
            await pipe.execute()

    # ------------------------------------------------------------ results and status

    @core.atranslated
    async def wait(self, job_id: str, timeout: float = 30.0) -> Any:
        """:meth:`slimyq.Client.wait`, as a coroutine (other tasks run while it waits)."""
        conn = await self.redis()
        deadline = time.monotonic() + timeout
        stream, last = keys.results(job_id), "0-0"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome = producer.timed_out(job_id, await conn.hget(keys.job(job_id), "status"))
                break
            reply = await conn.xread({stream: last}, count=10, block=producer.block_ms(left))
            found, last = producer.read_results(job_id, reply, last)
            if found is not None:
                outcome = found
                break
            if not await conn.exists(keys.job(job_id)):
                raise producer.gone(job_id)
        if outcome.status == "finished":
            return outcome.result
        fields = await conn.hmget(keys.job(job_id), *core.WAIT_FIELDS)
        raise core.end_error(job_id, timeout, outcome, fields)

    @core.atranslated
    async def job(self, job_id: str, user: str | None = None, *, traceback: bool = False) -> JobDetail | None:
        """:meth:`slimyq.Client.job`, as a coroutine: None for a missing job or another user's."""
        if not JOB_ID.match(job_id):
            return None
        conn = await self.redis()
        pipe = conn.pipeline(transaction=False)
        read_job(pipe, job_id)
        return job_detail(job_id, await pipe.execute(), user=user, traceback=traceback)

    @core.atranslated
    async def stats(self, queues: list[str] | None = None, *, by_type: bool = False) -> list[QueueStats]:
        """:meth:`slimyq.Client.stats`, run in a thread (a few pipelined reads)."""
        if self._sync is None:
            from slimyq.client import Client

            twin = _sync_twin(self._conn) if not self._owned and self._conn is not None else None
            self._sync = Client(settings=self.settings, connection=twin)
            self._twin = twin
        sync = self._sync
        return await asyncio.to_thread(sync.stats, queues, by_type=by_type)


def _sync_twin(conn: redis.asyncio.Redis) -> Any:
    """A sync client to the server a passed-in asyncio client talks to: :meth:`AsyncClient.stats`
    runs the sync reader in a thread, and must read the server the jobs were written to."""
    import redis as sync

    pool = conn.connection_pool
    kind = pool.connection_class.__name__
    connection_class = {"UnixDomainSocketConnection": sync.UnixDomainSocketConnection,
                        "SSLConnection": sync.SSLConnection}.get(kind, sync.Connection)
    return sync.Redis(connection_pool=sync.ConnectionPool(connection_class=connection_class,
                                                          **pool.connection_kwargs))
