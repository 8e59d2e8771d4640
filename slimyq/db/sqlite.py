"""SQLite with one writer at a time per process, waiting on a lock instead of SQLite's busy handler.

SQLite runs one write transaction at a time. With ten job threads, the losers of each race get
SQLITE_BUSY and SQLite's busy handler makes them *sleep* (1, 2, 5, 10 ... 100 ms) before trying
again, so most of the time nobody writes. Here every transaction begins ``IMMEDIATE`` (takes the
write lock up front: no failed lock upgrades) and threads of one process queue on a lock first,
so the next writer starts the moment the previous one commits. Other processes (another queue's
worker, a CLI command) still meet SQLite's own locking and ``busy_timeout``.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import peewee

WAIT = 10.0  # seconds


_instances: weakref.WeakSet[SerializedSqliteDatabase] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    # A child forked while another thread held the lock (``--fork`` forks from a threaded
    # worker) would inherit it held, with nobody left to release it.
    for db in list(_instances):
        db._writer = threading.Lock()
        db._holder = threading.local()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


class SerializedSqliteDatabase(peewee.SqliteDatabase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer = threading.Lock()
        self._holder = threading.local()
        _instances.add(self)

    def begin(self, lock_type: str | None = "IMMEDIATE") -> None:
        # A bounded wait: should a holder ever fail to release (a thread killed at the wrong
        # moment), writers fall back to SQLite's own locking instead of waiting forever.
        self._holder.held = self._writer.acquire(timeout=WAIT)
        try:
            super().begin(lock_type or "IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def _release(self) -> None:
        if getattr(self._holder, "held", False):
            self._holder.held = False
            self._writer.release()
