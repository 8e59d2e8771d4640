"""End to end: real ``slimyq worker --burst`` processes drain real jobs exactly once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import redis
from harness import (
    Env,
    WorkerProc,
    attempts,
    canaries,
    conversation_rows,
    conversations,
    history_states,
    leftovers,
    tally,
)


def _counts(conn: redis.Redis, queue: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = conn.hgetall(f"slimyq:counts:{queue}")  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.parametrize(("fork", "history"), [(False, False), (True, False), (True, True)],
                         ids=["threads", "fork", "fork-history"])
def test_drain_500_conversations_exactly_once(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc],
                                              fork: bool, history: bool) -> None:
    # fork-history: the job history on (the default) writes to the SQLite file the forked jobs
    # write to, from the worker's own thread; a job forked during one of its writes met
    # "database is locked" for 5 s and was retried (see slimyq.db.sqlite).
    env.reconfigure(history=history, queues={"database": {"keep_finished": 50}})
    ids = conversations(env, 500)
    worker = start("database", "--burst", *(["--fork"] if fork else []))
    assert worker.wait(120) == 0, worker.log()[-3000:]
    assert conversation_rows(env.db_url) == 500
    assert leftovers(conn) == {}
    # Retention: exactly keep_finished stay in the registry; all 500 results are still readable
    # for the trim grace period, each exactly once.
    assert conn.zcard("rq:finished:database") == 50
    t = tally(conn, ids)
    assert (t.finished, t.failed, t.duplicated, t.pending) == (500, 0, 0, 0)
    counts = _counts(conn, "database")
    assert counts["*:completed"] == 500
    assert counts["create_conversation:completed"] == 500
    assert "*:failed" not in counts and "*:retried" not in counts
    hist: dict[bytes, bytes] = conn.hgetall("slimyq:hist:database")  # type: ignore[assignment]
    assert int(hist[b"*:count"]) == 500
    assert sum(int(v) for k, v in hist.items() if k.startswith(b"*:le:")) == 500
    tp: dict[bytes, bytes] = conn.hgetall("slimyq:tp:database")  # type: ignore[assignment]
    assert sum(int(v) for k, v in tp.items() if k.startswith(b"*:")) == 500
    a = attempts(conn, ids[0])
    assert [x["outcome"] for x in a] == ["finished"]
    if history:
        assert history_states(env.db_url) == {"finished": 500}


def test_all_queues_in_one_command(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    chat = canaries(env, 40, "chat", sleep=0.01)
    db = conversations(env, 100)
    audit = canaries(env, 20, "audit")
    worker = start("--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    t = tally(conn, chat + db + audit)
    assert (t.finished, t.duplicated, t.pending) == (160, 0, 0)
    assert conversation_rows(env.db_url) == 100
    assert leftovers(conn) == {}
    assert _counts(conn, "chat")["canary:completed"] == 40
    assert _counts(conn, "audit")["canary:completed"] == 20
    assert _counts(conn, "database")["create_conversation:completed"] == 100


def test_unknown_queue_is_a_usage_error(env: Env) -> None:
    result = env.cli("worker", "nosuchqueue", "--burst")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nosuchqueue" in lines[0], result.stderr


def test_concurrency_flag_runs_n_at_once(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    ids = canaries(env, 4, "audit", sleep=1.0)  # audit is configured at concurrency 2
    worker = start("audit", "--burst", "--concurrency", "4")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    assert tally(conn, ids).finished == 4
    spans = []
    for job_id in ids:
        (a,) = attempts(conn, job_id)
        spans.append((dt.datetime.fromisoformat(a["startedAt"]), dt.datetime.fromisoformat(a["endedAt"])))
    # All four ran in one batch: every job started before any job ended.
    assert max(s for s, _ in spans) < min(e for _, e in spans)


def test_max_jobs_runs_exactly_n(env: Env, conn: redis.Redis, start: Callable[..., WorkerProc]) -> None:
    ids = canaries(env, 30, "database", sleep=0.05)
    worker = start("database", "--max-jobs", "10", "--concurrency", "4")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    t = tally(conn, ids)
    assert (t.finished, t.duplicated) == (10, 0)
    assert conn.llen("rq:queue:database") == 20
    assert leftovers(conn, ["database"]) == {"rq:queue:database": 20}
