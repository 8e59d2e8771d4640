"""Job timeouts for jobs running in threads.

A thread cannot be killed, so a job past its deadline gets :class:`JobTimeout` raised inside its
thread (``PyThreadState_SetAsyncExc``, what RQ's ``TimerDeathPenalty`` does). That lands at the
next bytecode: pure-Python loops and short sleeps stop at once. A thread stuck in one long C call
does not; the watchdog then calls the job's ``on_stuck``: the worker keeps the job's slot and
restarts its process, so that the job is retried only once the thread is gone.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from slimyq.runtime.execute import JobTimeout

log = logging.getLogger("slimyq.worker")

STUCK_AFTER = 5.0  # seconds past the deadline before a thread that ignores JobTimeout is given up


@dataclass
class _Watch:
    thread_id: int
    deadline: float
    on_stuck: Callable[[], None]
    token: int = 0
    raised: bool = False
    exc: type[JobTimeout] = JobTimeout


class Watchdog:
    def __init__(self, tick: float = 0.1) -> None:
        self._tick = tick
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._alarms: dict[int, tuple[float, Callable[[], None]]] = {}  # token -> (when, callback)
        self._tokens = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slimyq-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def watch(self, timeout: float, on_stuck: Callable[[], None]) -> int:
        """Watch the calling thread (one watch per thread); returns this watch's own token, for
        :meth:`release` and :meth:`expire`."""
        ident = threading.get_ident()
        with self._lock:
            token = next(self._tokens)
            self._watches[ident] = _Watch(ident, time.monotonic() + timeout, on_stuck, token)
        return token

    def _find(self, token: int) -> _Watch | None:
        watch = self._watches.get(threading.get_ident())
        if watch is not None and watch.token == token:
            return watch
        return next((w for w in self._watches.values() if w.token == token), None)

    def release(self, token: int) -> bool:
        """Stop watching; True if the job's time ran out (JobTimeout was or may be raised)."""
        with self._lock:
            watch = self._find(token)
            if watch is not None:
                del self._watches[watch.thread_id]
        if watch is not None and watch.raised:
            # The exception may still be pending for this thread: clear it.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(watch.thread_id), None)
            return True
        return False

    def expire(self, token: int, exc: type[JobTimeout] = JobTimeout) -> None:
        """End the watched job now, as if its time ran out (it runs elsewhere already, or it was
        asked to stop: ``exc`` is what its thread gets). A watch that has ended is left alone:
        the token never reaches the thread's next job, or a batch's commit."""
        with self._lock:
            watch = self._find(token)
            if watch is not None:
                watch.deadline = min(watch.deadline, time.monotonic())
                watch.exc = exc

    def alarm(self, delay: float, callback: Callable[[], None]) -> int:
        """Call ``callback`` on the watchdog's thread in about ``delay`` seconds (to its tick);
        returns a token for :meth:`cancel`."""
        with self._lock:
            token = next(self._tokens)
            self._alarms[token] = (time.monotonic() + delay, callback)
        return token

    def cancel(self, token: int) -> None:
        with self._lock:
            self._alarms.pop(token, None)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            stuck: list[_Watch] = []
            with self._lock:
                due = [t for t, (when, _) in self._alarms.items() if when <= now]
                alarms = [self._alarms.pop(t)[1] for t in due]
                for watch in list(self._watches.values()):
                    if now < watch.deadline:
                        continue
                    if not watch.raised:
                        watch.raised = True
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(watch.thread_id), ctypes.py_object(watch.exc)
                        )
                    elif now > watch.deadline + STUCK_AFTER:
                        del self._watches[watch.thread_id]
                        stuck.append(watch)
            for callback in alarms:
                try:
                    callback()
                except Exception:  # a bug in the callback must not stop the timeouts
                    log.exception("a watchdog alarm failed")
            for watch in stuck:
                watch.on_stuck()
