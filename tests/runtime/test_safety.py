"""Hostile and malformed job hashes are refused without being imported or run; the worker goes on."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import redis
from harness import Env, WorkerProc, attempts, canaries, leftovers, tally, wait_done
from rq import Queue
from rq.serializers import JSONSerializer

from slimyq.runtime import codec


def _error(conn: redis.Redis, job_id: str) -> str:
    (entry,) = [f for _i, f in conn.xrange(f"rq:results:{job_id}")]  # type: ignore[union-attr]
    assert entry[b"type"] == b"2"
    return codec.decode_exc_string(entry[b"exc_string"]) or ""


def _raw_job(conn: redis.Redis, job_id: str, queue: str, **fields: bytes | str) -> None:
    conn.hset(f"rq:job:{job_id}", mapping={"status": "queued", "origin": queue, **fields})
    conn.rpush(f"rq:queue:{queue}", job_id)


def test_hostile_and_malformed_jobs_are_refused(env: Env, conn: redis.Redis, tmp_path: Path,
                                                start: Callable[..., WorkerProc]) -> None:
    marker = tmp_path / "marker"
    json_q = Queue("database", connection=conn, serializer=JSONSerializer)
    pickle_q = Queue("database", connection=conn)  # RQ's default: pickle
    hostile = json_q.enqueue("os.system", f"touch {marker}")
    outside = json_q.enqueue("subprocess.run", [f"touch {marker}"], shell=True)
    pickled = pickle_q.enqueue("os.system", f"touch {marker}-pickle")
    wrong_queue = json_q.enqueue("slimyq.jobs.chat.chat_bot_interaction", prompt="hi", userId="u1")
    _raw_job(conn, "garbage", "database", data=b"\x00\xffnot json at all")
    _raw_job(conn, "notalist", "database", data=zlib.compress(b'{"func": "os.system"}'))
    _raw_job(conn, "nodata", "database")
    _raw_job(conn, "badutf8", "database", data=zlib.compress(b'["slimyq.jobs.canary.canary", null, [], {"x": "\xff"}]'))
    (good,) = canaries(env, 1, "database")
    ids = [hostile.id, outside.id, pickled.id, wrong_queue.id, "garbage", "notalist", "nodata", "badutf8", good]

    worker = start("database")  # not --burst: it must still be serving after the bad jobs
    t = wait_done(conn, ids, 30)
    assert (t.failed, t.finished, t.duplicated, t.pending) == (8, 1, 0, 0), t
    assert worker.proc.poll() is None, worker.log()[-3000:]
    (late,) = canaries(env, 1, "database")
    assert wait_done(conn, [late], 30).finished == 1
    assert not marker.exists() and not Path(f"{marker}-pickle").exists()

    assert "'os.system' is not a registered slimyq job type" in _error(conn, hostile.id)
    assert "'subprocess.run' is not a registered" in _error(conn, outside.id)
    assert "pickled jobs are refused" in _error(conn, pickled.id)
    assert "belong on the 'chat' queue" in _error(conn, wrong_queue.id)
    assert "not JSON" in _error(conn, "garbage")
    assert "not an RQ call" in _error(conn, "notalist")
    assert "no data" in _error(conn, "nodata")
    for job_id in ids[:-1]:
        a = attempts(conn, job_id)
        assert len(a) == 1 and a[0]["outcome"] in ("refused", "failed"), (job_id, a)  # never retried
    for job_id in [hostile.id, outside.id, pickled.id, "garbage", "nodata"]:
        assert attempts(conn, job_id)[0]["outcome"] == "refused"
    counts = {k.decode(): int(v) for k, v in conn.hgetall("slimyq:counts:database").items()}  # type: ignore[union-attr]
    assert "*:retried" not in counts
    assert "Traceback" not in worker.log()
    worker.signal(15)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_hostile_job_in_fork_mode(env: Env, conn: redis.Redis, tmp_path: Path,
                                  start: Callable[..., WorkerProc]) -> None:
    marker = tmp_path / "marker"
    hostile = Queue("chat", connection=conn, serializer=JSONSerializer).enqueue("os.system", f"touch {marker}")
    (good,) = canaries(env, 1, "chat")
    worker = start("chat", "--burst", "--fork")
    assert worker.wait(60) == 0, worker.log()[-3000:]
    t = tally(conn, [hostile.id, good])
    assert (t.failed, t.finished) == (1, 1)
    assert not marker.exists()
    assert "refused" in _error(conn, hostile.id)
