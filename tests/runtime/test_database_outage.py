"""PostgreSQL unavailable for a few seconds under load: jobs wait it out (their attempts are not
used up), the worker reconnects, every job finishes exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from harness import Env, WorkerProc, conversation_rows, conversations, leftovers, wait_done, wait_until

pytestmark = pytest.mark.postgres


def test_postgres_down_for_seconds(tmp_path, redis_url: str, private_pg_url: str,
                                   start: Callable[..., WorkerProc]) -> None:
    import psycopg

    admin_url = private_pg_url.rsplit("/", 1)[0] + "/postgres"
    env = Env.make(tmp_path / "pg", redis_url, private_pg_url)
    conn = env.conn()
    ids = conversations(env, 120)
    worker = start("database", on=env)
    wait_until(lambda: conn.zcard("rq:finished:database") >= 10, 60, 0.02)
    name = private_pg_url.rsplit("/", 1)[1]
    end = time.monotonic() + 4
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            while time.monotonic() < end:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                time.sleep(0.2)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    t = wait_done(conn, ids, 120)
    assert (t.finished, t.failed, t.duplicated) == (120, 0, 0), worker.log()[-3000:]
    assert conversation_rows(private_pg_url) == 120
    assert worker.proc.poll() is None  # the worker stayed up
    worker.stop()
    assert leftovers(conn) == {}
