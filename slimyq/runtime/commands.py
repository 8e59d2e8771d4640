"""RQ's worker commands (``rq.command.send_*``), heard on RQ's channel ``rq:pubsub:<worker name>``.

- ``stop-job`` / ``stop-execution``: the named job, if this worker runs it, is stopped: its thread
  gets :class:`JobStopped` (a forked job's process is killed). It ends ``stopped``, in the failed
  registry, and is not retried, as under RQ's worker. A job that finishes before the stop lands
  keeps its result. A stop that lands after the job was marked running but before its thread's
  watch (or its forked process) exists is applied as soon as that exists.
- ``shutdown``: a warm shutdown, as SIGTERM.
- ``kill-horse``: slimyq has no horse; ignored (logged).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from slimyq.runtime.execute import JobStopped, Result

if TYPE_CHECKING:
    from slimyq.runtime.worker import QueueWorker

log = logging.getLogger("slimyq.worker")


def channel(worker_name: str) -> str:
    return f"rq:pubsub:{worker_name}"


class Commands:
    def __init__(self, worker: QueueWorker) -> None:
        self.w = worker
        self.stopped: set[str] = set()  # members asked to stop (read by the worker for the outcome)
        self.children: dict[str, int] = {}  # member -> forked job process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slimyq-commands", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pubsub = self.w.conn.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
                pubsub.subscribe(channel(self.w.name))
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self.handle(message["data"])
            except redis.RedisError:
                self._stop.wait(1.0)  # subscribe again once Redis is back
            except Exception:  # a command must never stop this thread
                log.exception("worker command failed")

    def handle(self, data: bytes | str) -> None:
        try:
            payload: Any = json.loads(data)
            command = payload.get("command")
        except (ValueError, AttributeError):
            log.warning("ignored a worker command that is not RQ's JSON: %r", data[:100])
            return
        if command in ("stop-job", "stop-execution"):
            self.stop_job(str(payload.get("job_id", "")), payload.get("execution_id"))
        elif command == "shutdown":
            log.warning("shutdown requested by an RQ command")
            self.w.request_stop()
        else:
            log.info("ignored RQ command %r", command)

    def stop_job(self, job_id: str, execution_id: str | None = None) -> list[str]:
        """Stop the running executions of ``job_id`` (only ``execution_id``'s, if given), and those
        claimed here that wait for their thread (in a row or a batch): they end as stopped without
        running (:meth:`QueueWorker._run_one`)."""
        with self.w.lock:
            members = [m for m in [*self.w.running_members(), *self.w.waiting_members()]
                       if m.rpartition(":")[0] == job_id and execution_id in (None, m.rpartition(":")[2])]
            self.stopped.update(members)
            targets = [(m, self.w.thread_of(m), self.children.get(m)) for m in members]
        if not members:
            log.info("stop-job %s: not running here, ignored", job_id)
        for member, token, pid in targets:
            log.warning("stopping job %s on request", member.rpartition(":")[0])
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            elif token is not None:
                self.w.watchdog.expire(token, JobStopped)
        return members

    def forked(self, member: str, pid: int) -> None:
        """A job's process was forked: one a stop-job already asked for is killed now."""
        with self.w.lock:
            self.children[member] = pid
            stop = member in self.stopped
        if stop:
            log.warning("stopping job %s on request", member.rpartition(":")[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def outcome(self, member: str, result: Result) -> Result:
        """The attempt's result, as ``stopped`` if a stop request reached it before it succeeded."""
        self.children.pop(member, None)
        if member not in self.stopped:
            return result
        self.stopped.discard(member)
        if result.ok:
            return result  # it finished before the stop landed: the result stands
        return Result(ok=False, error_type="stopped", error="stopped on request (RQ's stop-job command)",
                      stopped=True, permanent=True, job_type=result.job_type, user=result.user,
                      started=result.started, ended=result.ended or time.time())
