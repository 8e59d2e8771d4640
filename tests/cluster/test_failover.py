"""Redis failover under a running worker: a primary, a replica and three sentinels of our own; the
worker and the enqueuer use a ``redis+sentinel://`` URL; the primary is SIGKILLed while jobs run.

What is promised (README, Reliability): jobs acknowledged with ``redis_wait_replicas = 1`` before
the failover all run, exactly one terminal result each and one row each on PostgreSQL; the worker
carries on against the promoted replica by itself; jobs enqueued after the promotion run too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import FAST_WORKER
from cluster_ha import FAILOVER_TIMEOUT_MS, SentinelSet
from harness import Env, WorkerProc, conversation_rows, dump, tally, wait_done, wait_until, wip_and_claims

from slimyq.jobs import registry
from slimyq.payloads.common import validate_payload
from slimyq.producer import EnqueueRequest, enqueue_many
from slimyq.redis import connect

pytestmark = pytest.mark.slow


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path / "ha")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def _enqueue(env: Env, conn: object, n: int, user: str, wait_replicas: int) -> list[str]:
    settings = env.settings().model_copy(update={"redis_wait_replicas": wait_replicas})
    jt = registry.get("create_conversation")
    reqs = [EnqueueRequest(jt, validate_payload(jt.payload, {"userId": user, "title": f"t{i}"}), "database")
            for i in range(n)]
    return [e.id for e in enqueue_many(conn, settings, reqs)]  # type: ignore[arg-type]


def test_primary_killed_while_jobs_run(ha: SentinelSet, tmp_path: Path, private_pg_url: str) -> None:
    env = Env.make(tmp_path / "rt", ha.url, private_pg_url, worker=FAST_WORKER)
    conn = connect(env.settings())
    before = _enqueue(env, conn, 600, "u1", wait_replicas=1)  # acknowledged by the replica too
    worker: WorkerProc = env.worker("database", "--log-level", "info")
    try:
        wait_until(lambda: tally(conn, before).finished >= 50, 120, 0.05, "50 jobs finished")
        old, killed_at = ha.kill_primary()
        new = ha.wait_promoted(old)
        promoted_in = time.monotonic() - killed_at
        done_at_kill = tally(conn, before).finished
        wait_until(lambda: tally(conn, before).finished > done_at_kill, 120, 0.05, "a completion after promotion")
        resumed_in = time.monotonic() - killed_at
        # Within the sentinels' failover timeout of the promotion, with room for a loaded machine
        # (the worker's reconnect backoff, a claim round): not minutes of a stuck worker.
        bound = promoted_in + FAILOVER_TIMEOUT_MS / 1000 + 10
        assert resumed_in < bound, f"jobs resumed {resumed_in:.1f} s after the kill, promoted at {promoted_in:.1f} s"
        after = _enqueue(env, conn, 100, "u2", wait_replicas=0)  # no replica left to wait for
        ids = before + after
        t = wait_done(conn, ids, 180)
        counts = (t.finished, t.failed, t.pending, t.duplicated)
        assert counts == (len(ids), 0, 0, 0), f"{t}\n{dump(conn, t.missing)}\n{worker.log()[-4000:]}"
        assert conversation_rows(private_pg_url) == len(ids)
        wait_until(lambda: not wip_and_claims(conn, ["database"]), 30, what="nothing left started")
        assert int(conn.info("server")["tcp_port"]) == new
        assert worker.proc.poll() is None, worker.log()[-4000:]  # carried on by itself
        print(f"promoted after {promoted_in:.1f} s; jobs finishing again {resumed_in:.1f} s after the kill")
    finally:
        worker.stop()
        conn.close()
