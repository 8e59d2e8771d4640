"""``--fork``: each job in its own forked child, for isolation (memory leaks, crashes, C extensions).

The worker process has already imported every handler, so a fork costs ~1-3 ms and no re-import
(RQ's forking worker re-imports the job module in every child). The child runs the job and
writes the outcome as JSON to a pipe; the parent enforces the timeout with SIGKILL.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from slimyq.runtime.execute import Result


def _reset_database_after_fork() -> None:
    """The child must not use (or close) the parent's database sockets: forget them."""
    try:
        from slimyq.db.models import database_proxy
    except ImportError:  # pragma: no cover - db layer always present
        return
    db: Any = database_proxy.obj
    if db is not None:
        state = getattr(db, "_state", None)
        if state is not None:
            state.reset()


def run_in_child(run: Callable[[], Result], timeout: float, on_fork: Callable[[int], None] | None = None) -> Result:
    """Fork, call ``run()`` in the child, return its :class:`Result` (or a timeout/crash result);
    ``on_fork`` gets the child's pid (so a stop request can kill it)."""
    read_fd, write_fd = os.pipe()
    started = time.time()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            # Die with the worker (SIGKILLed, OOM-killed, second SIGTERM): an orphaned job must
            # not keep running while the supervisor hands the same job to another worker.
            from slimyq.runtime.supervisor import die_with_parent

            die_with_parent(signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)
            os.close(read_fd)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _reset_database_after_fork()
            result = run()
            data = json.dumps(result.__dict__, default=str).encode()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(data)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    if on_fork is not None:
        on_fork(pid)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return Result(ok=False, error_type="timeout", error=f"job exceeded its timeout of {timeout:g} s",
                      started=started, ended=time.time())
    if not chunks:
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
        return Result(ok=False, error_type="crashed", error=f"job process died ({how})",
                      started=started, ended=time.time())
    return Result(**json.loads(b"".join(chunks)))
