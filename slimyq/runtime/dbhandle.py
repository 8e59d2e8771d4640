"""The database a worker process's jobs share: opened by the first job that needs it.

Opening may take a network round trip (or a connect timeout): the lock that makes one thread
open it is waited for in short steps, so a job timeout still reaches a waiting thread, and it is
made anew in a child forked while another thread held it (``--fork``). It is an ``RLock`` taken
inside ``try``: whether this thread holds it is asked of the lock, so a job timeout (an exception
raised asynchronously into the thread) landing right after the acquire cannot leave it held.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from slimyq.config import Settings
from slimyq.db.instrument import backend_of
from slimyq.logs import event

log = logging.getLogger("slimyq.worker")

_instances: weakref.WeakSet[JobDatabase] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    for handle in list(_instances):
        handle._lock = threading.RLock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


class JobDatabase:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Any = None
        self._lock = threading.RLock()
        _instances.add(self)

    def get(self) -> Any:
        while self._db is None:
            try:
                if self._lock.acquire(timeout=0.1) and self._db is None:
                    from slimyq.db import open_database

                    self._db = open_database(self.settings)
                    event(log, logging.INFO, "database.connected", "database opened",
                          backend=backend_of(self._db))
            finally:
                if self._owned():
                    self._lock.release()
        return self._db

    def opened(self) -> Any:
        """The database if it was opened already (by a job), else None: never opens it."""
        return self._db

    def _owned(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def reset(self) -> None:
        """Drop this thread's database connection after the database went away, so the next job
        connects afresh instead of failing on a dead socket (peewee does not reconnect by itself)."""
        db = self._db
        if db is None:
            return
        conn = getattr(db._state, "conn", None)
        db._state.reset()
        event(log, logging.WARNING, "database.reconnect",
              "database unavailable: this thread's connection is dropped, the next job reconnects",
              backend=backend_of(db))
        if conn is not None:
            try:
                db._close(conn)  # through the database, so the connection gauge sees it
            except Exception as exc:  # the socket is gone already
                log.debug("closing a dead database connection: %s", exc)
