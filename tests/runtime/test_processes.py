"""A queue spread over several worker processes: concurrency shared out, every job once."""

from __future__ import annotations

from collections.abc import Callable

import redis
from harness import Env, WorkerProc, conversation_rows, conversations, leftovers, tally

from slimyq.runtime.supervisor import split


def test_split_spreads_concurrency() -> None:
    assert split(5, 2) == [3, 2]
    assert split(10, 1) == [10]
    assert split(2, 5) == [1, 1]  # never more processes than slots


def test_two_processes_drain_a_queue_once(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    ids = conversations(env, 300)
    worker = start("database", "--burst", "--processes", "2", "--concurrency", "6")
    assert len(worker.wait_children(2)) == 2
    assert worker.wait(90) == 0, worker.log()[-3000:]
    t = tally(conn, ids)
    assert (t.finished, t.duplicated) == (300, 0)
    assert conversation_rows(env.db_url) == 300
    assert leftovers(conn) == {}
