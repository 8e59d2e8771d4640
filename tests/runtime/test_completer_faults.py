"""The completer thread when writing a batch raises (a bug, not Redis): the same batch is written
again, once; if it keeps failing the worker process restarts and the jobs run again elsewhere,
none left started."""

from __future__ import annotations

import multiprocessing
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import redis
from harness import Env, WorkerProc, attempts, canaries, leftovers, status, wait_done, wait_until


def _failing_writes(env: Env, root: Path, failures: int) -> Path:
    """The first ``failures`` calls of the completer's write raise, counted across processes."""
    count = root / "write-failures"
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import os
        from slimyq.runtime.completer import Completer

        real = Completer._write

        def _write(self, batch, flush_stats=False, token=None):
            if batch:
                done = os.path.getsize({str(count)!r}) if os.path.exists({str(count)!r}) else 0
                if done < {failures}:
                    with open({str(count)!r}, "a") as f:
                        f.write("x")
                    raise RuntimeError("injected: writing the batch failed")
            return real(self, batch, flush_stats, token)

        Completer._write = _write
    """))
    env.extra["PYTHONPATH"] = str(site)
    return count


def test_a_failed_write_is_retried_with_the_same_batch(env: Env, conn: redis.Redis,
                                                       start: Callable[..., WorkerProc], tmp_path: Path) -> None:
    _failing_writes(env, tmp_path, failures=1)
    (job_id,) = canaries(env, 1, "database")
    worker = start("database")
    (child,) = worker.wait_children(1)
    t = wait_done(conn, [job_id], 60)
    assert (t.finished, t.duplicated) == (1, 0), worker.log()[-3000:]
    assert [a["outcome"] for a in attempts(conn, job_id)] == ["finished"]
    assert "injected: writing the batch failed" in worker.log()
    assert [c.pid for c in worker.children()] == [child.pid]  # no restart
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_a_dead_completer_restarts_the_process_and_its_jobs_run_again(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], tmp_path: Path) -> None:
    from slimyq.runtime.completer import WRITE_TRIES

    _failing_writes(env, tmp_path, failures=WRITE_TRIES)
    ids = canaries(env, 3, "database")
    worker = start("database")
    (child,) = worker.wait_children(1)
    t = wait_done(conn, ids, 120)
    assert (t.finished, t.pending) == (3, 0), worker.log()[-3000:]
    log = worker.log()
    assert "job outcomes can no longer be written" in log
    assert "job outcomes of" in log and "could not be written" in log
    assert "ran past its timeout" not in log
    assert all(c.pid != child.pid for c in worker.children())
    for job_id in ids:  # the attempt whose outcome was lost is charged
        outcomes = [a["outcome"] for a in attempts(conn, job_id)]
        assert len(outcomes) == 2 and outcomes[-1] == "finished", outcomes
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert leftovers(conn) == {}


def test_a_batch_whose_outcomes_can_never_be_written_ends_failed(
        env: Env, conn: redis.Redis, start: Callable[..., WorkerProc], tmp_path: Path) -> None:
    _failing_writes(env, tmp_path, failures=10**9)
    env.reconfigure(queues={"database": {"attempts": 2}})
    ids = canaries(env, 2, "database")
    worker = start("database")
    wait_until(lambda: all(status(conn, job_id) == "failed" for job_id in ids), 120,
               what="the jobs to fail after their attempts")
    for job_id in ids:
        assert len(attempts(conn, job_id)) == 2
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    log = worker.log()
    assert log.count("could not be written; ") >= 2
    assert leftovers(conn) == {}


def _exit_with(code: int) -> None:
    os._exit(code)


def test_restarts_after_outcomes_could_not_be_written_back_off(env: Env, conn: redis.Redis) -> None:
    from slimyq.runtime.supervisor import Child, Supervisor
    from slimyq.runtime.worker import EXIT_RESTART, EXIT_UNWRITTEN

    supervisor = Supervisor(env.settings(), {"database": (1, 1)})
    child = supervisor.children[0]
    assert isinstance(child, Child)
    delays = []
    for code in (EXIT_UNWRITTEN, EXIT_UNWRITTEN, EXIT_UNWRITTEN, EXIT_RESTART):
        child.name = f"w{len(delays)}"
        child.process = multiprocessing.get_context("fork").Process(target=_exit_with, args=(code,))
        child.process.start()
        supervisor._reap(conn, child)
        delays.append(child.next_start - child.history[-1])
    assert delays == [1, 2, 4, 0]
    assert not child.done
