"""RQ's stop-job command landing after the job was marked running but before its handler (or its
forked process) started: the stop is honoured, not lost. The command is sent from inside the
worker at exactly that point (a ``sitecustomize`` on its path), so the race is always hit."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from harness import Env, WorkerProc, attempts, leftovers, status, wait_until
from rq import Queue
from rq.serializers import JSONSerializer

CANARY = "slimyq.jobs.canary.canary"


def _stop_before_the_handler(env: Env, root: Path) -> None:
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import time
        from rq.command import send_stop_job_command
        from slimyq.runtime.worker import QueueWorker

        real = QueueWorker._run_one

        def _run_one(self, job):
            send_stop_job_command(self.conn, job.id)
            deadline = time.monotonic() + 30
            while job.member not in self.commands.stopped and time.monotonic() < deadline:
                time.sleep(0.01)  # until the command thread has heard it
            return real(self, job)

        QueueWorker._run_one = _run_one
    """))
    env.extra["PYTHONPATH"] = str(site)


@pytest.mark.parametrize("fork", [False, True], ids=["threads", "fork"])
def test_a_stop_job_before_the_handler_starts_stops_the_job(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], tmp_path: Path, fork: bool) -> None:
    _stop_before_the_handler(env, tmp_path)
    q = Queue("database", connection=conn, serializer=JSONSerializer)
    job = q.enqueue(CANARY, kwargs={"sleepSeconds": 0, "failTimes": 0})
    worker = start("database", *(["--fork"] if fork else []))
    wait_until(lambda: status(conn, job.id) in ("stopped", "finished"), 60, what="the job to end")
    assert status(conn, job.id) == "stopped", worker.log()[-3000:]
    (attempt,) = attempts(conn, job.id)
    assert conn.zscore("rq:failed:database", job.id) is not None
    assert conn.zscore("rq:finished:database", job.id) is None, attempt
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}
