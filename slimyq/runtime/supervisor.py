"""``slimyq worker``: one supervisor, one worker process per queue, each at its own concurrency.

The supervisor imports everything the jobs need *before* forking, so children share those pages
and never re-import per job. It watches its children: a child that dies unexpectedly (SIGKILL,
OOM) has its jobs retried at once (not after a heartbeat timeout) and is restarted with backoff.
Children die with the supervisor (``PR_SET_PDEATHSIG``): no orphan keeps running jobs unseen.

Signals: the first SIGTERM/SIGINT asks every child to finish its running jobs (grace period) and
put the rest back; a second one stops them at once, and the supervisor puts their jobs back.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from slimyq.config import Settings
from slimyq.logs import event
from slimyq.runtime.worker import EXIT_OK, EXIT_RESTART, EXIT_UNWRITTEN

log = logging.getLogger("slimyq.supervisor")
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: get ``sig`` when the parent exits."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except OSError:  # pragma: no cover - not Linux
        pass


@dataclass
class Child:
    queue: str
    concurrency: int
    index: int = 0
    process: Any = None
    name: str = ""
    restarts: int = 0
    started_at: float = 0.0
    done: bool = False
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)


def _child_main(settings: Settings, queue: str, concurrency: int, burst: bool, max_jobs: int | None,
                fork: bool, parent: int, name: str) -> None:
    # Forget the supervisor's handlers (inherited by fork) until the worker installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before we set the death signal
        os._exit(0)
    from slimyq.runtime.worker import QueueWorker

    worker = QueueWorker(settings, queue, concurrency=concurrency, burst=burst, max_jobs=max_jobs, fork=fork,
                         name=name)
    worker.install_signals()
    code = worker.run()
    from slimyq.obs import trace

    trace.shutdown()  # export buffered spans before os._exit
    logging.shutdown()
    os._exit(code)


def preload(settings: Settings, queues: list[str]) -> None:
    """Import every handler (and rq, peewee) once, before forking; a handler module's own
    ``preload(settings)`` imports what its first job would otherwise pay for (the OpenAI SDK)."""
    import rq  # noqa: F401

    from slimyq.jobs import registry

    modules = {jt.func_name.rpartition(".")[0] for jt in registry.all_types()
               if jt.queue in (registry.ANY_QUEUE, *queues)}
    for name in sorted(modules):
        hook = getattr(importlib.import_module(name), "preload", None)
        if callable(hook):
            hook(settings)


def split(concurrency: int, processes: int) -> list[int]:
    """Spread a queue's concurrency over its processes: 5 over 2 -> [3, 2]."""
    processes = max(1, min(processes, concurrency))
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


class Supervisor:
    def __init__(self, settings: Settings, queues: dict[str, tuple[int, int]], *, burst: bool = False,
                 max_jobs: int | None = None, fork: bool = False) -> None:
        self.settings = settings
        self.children = [Child(q, n, index=i)
                         for q, (total, procs) in queues.items() for i, n in enumerate(split(total, procs))]
        self.burst = burst
        self.max_jobs = max_jobs
        self.fork = fork
        self.signals = 0
        self._ctx = multiprocessing.get_context("fork")

    def _log_start(self) -> None:
        plan: dict[str, dict[str, int]] = {}
        for c in self.children:
            entry = plan.setdefault(c.queue, {"concurrency": 0, "processes": 0})
            entry["concurrency"] += c.concurrency
            entry["processes"] += 1
        event(log, logging.INFO, "supervisor.start", "starting workers: " + ", ".join(
            f"{q} x{p['concurrency']} in {p['processes']} process(es)" for q, p in plan.items())
            + (" (fork per job)" if self.fork else ""), pid=os.getpid(), queues=plan, fork=self.fork)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals += 1
        sig = signal.SIGTERM if self.signals == 1 else signal.SIGUSR1
        if self.signals == 1:
            grace = self.settings.worker.shutdown_grace
            event(log, logging.WARNING, "supervisor.stopping",
                  f"stopping: finishing running jobs (up to {grace:g}s); signal again to stop at once",
                  signal=signal.Signals(signum).name,
                  grace_s=grace)
        elif self.signals == 2:
            event(log, logging.WARNING, "supervisor.stopping_now", "stopping at once: running jobs are put back",
                  signal=signal.Signals(signum).name)
        for child in self.children:
            if child.process is not None and child.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, sig)

    def _start(self, child: Child) -> None:
        child.name = f"slimyq.{os.uname().nodename}.{os.getpid()}.{child.queue}.{child.index}.{child.restarts}"
        child.process = self._ctx.Process(
            target=_child_main,
            args=(self.settings, child.queue, child.concurrency, self.burst, self.max_jobs, self.fork,
                  os.getpid(), child.name),
            name=f"slimyq-worker-{child.queue}",
            daemon=False,
        )
        child.process.start()
        child.started_at = time.monotonic()

    def run(self) -> int:
        from slimyq.db import open_database
        from slimyq.redis import connect

        conn = connect(self.settings)  # fail fast (and start the embedded server) before forking
        db = open_database(self.settings)  # migrates the SQLite default, checks other schemas
        db.close()
        preload(self.settings, [c.queue for c in self.children])
        from slimyq import _startup

        _startup.settled()  # what preload imported too, right before forking: children share it unwalked
        self._log_start()  # once Redis and the database passed their checks
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self.children:
            self._start(child)
        while True:
            live = [c for c in self.children if c.process is not None and not c.done]
            pending = [c for c in self.children if c.process is None and not c.done]
            if not live and not pending:
                return 0
            sentinels = [c.process.sentinel for c in live]
            ready: list[Any] = []
            if sentinels:
                ready = list(wait(sentinels, timeout=0.5))
            else:
                time.sleep(0.5)
            for child in live:
                if child.process.sentinel in ready or not child.process.is_alive():
                    self._reap(conn, child)
            for child in pending:
                if self.signals:
                    child.done = True
                elif time.monotonic() >= child.next_start:
                    self._start(child)

    def _reap(self, conn: Any, child: Child) -> None:
        from slimyq.runtime.presence import recover_dead, recover_stuck, recover_unwritten, release, unregister

        proc = child.process
        proc.join(timeout=1)
        code = proc.exitcode
        requested = self.signals > 0
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        try:
            if code == EXIT_UNWRITTEN:
                # Its completer failed: the jobs it still holds ran (or were running) and their
                # outcomes are lost. Each counts an attempt, stop requested or not.
                retried = recover_unwritten(conn, self.settings, child.queue, child.name)
                event(log, logging.ERROR, "worker.outcomes_unwritten",
                      f"job outcomes of {child.name} could not be written; {len(retried)} job(s) retried",
                      worker=child.name, queue=child.queue, count=len(retried), job_ids=retried[:20])
            elif code == EXIT_RESTART and not requested:
                # It exited to end stuck job threads; only those jobs are left in its executions
                # (it put back the rest itself). The process is gone: they may run again now.
                retried = recover_stuck(conn, self.settings, child.queue, child.name)
                if retried:
                    event(log, logging.WARNING, "jobs.recovered",
                          f"{len(retried)} stuck job(s) of {child.name} retried after its restart",
                          worker=child.name, queue=child.queue, count=len(retried), why="stuck")
            elif requested or code == EXIT_OK:
                released = release(conn, self.settings, child.queue, child.name)
                unregister(conn, child.name, child.queue)
                if released:
                    event(log, logging.WARNING, "jobs.released",
                          f"put {len(released)} job(s) of {child.name} back on {child.queue}",
                          worker=child.name, queue=child.queue, count=len(released))
            else:
                retried = recover_dead(conn, self.settings, child.queue, child.name, how)
                event(log, logging.ERROR, "worker.died",
                      f"worker {child.name} died ({how}); {len(retried)} job(s) retried",
                      worker=child.name, queue=child.queue, how=how, count=len(retried), job_ids=retried[:20])
        except Exception as exc:  # Redis down: the expired-job maintenance recovers them later
            event(log, logging.ERROR, "jobs.recovery_failed", f"could not recover jobs of {child.name} ({exc})",
                  worker=child.name, queue=child.queue, error_type=type(exc).__name__)
        child.process = None
        if requested or (code == EXIT_OK and (self.burst or self.max_jobs is not None)):
            child.done = True
            return
        # Unexpected exit (or a restart request): start again, backing off if it keeps crashing
        # (or keeps failing to write outcomes); a restart to end stuck threads is immediate.
        now = time.monotonic()
        child.history = [t for t in child.history if now - t < 60] + [now]
        child.restarts += 1
        delay = 0.0 if code == EXIT_RESTART else min(2 ** (len(child.history) - 1), 30)
        child.next_start = now + delay
