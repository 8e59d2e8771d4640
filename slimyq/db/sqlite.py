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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee

WAIT = 10.0  # seconds


_instances: weakref.WeakSet[SerializedSqliteDatabase] = weakref.WeakSet()


GUARD_WAIT = 1.0  # seconds a fork waits for unforked() blocks (then forks: a block stuck on I/O)
_fork = threading.local()  # .held: the locks the forking thread took (threads fork at once in --fork)
_guard = threading.RLock()  # held by SQLite work outside a transaction that a fork must wait for


@contextmanager
def unforked() -> Iterator[None]:
    """Hold this process's forks off while the block works with SQLite (connects, writes,
    closes): for a thread that does while others fork (the job history's writer in a ``--fork``
    worker). See :func:`_between_writes_before_fork`. Waits at most ``WAIT`` for a fork to end
    (a lock a broken fork left held would otherwise stop the block for good)."""
    guard = _guard
    held = guard.acquire(timeout=WAIT)
    try:
        yield
    finally:
        if held:
            guard.release()


def _between_writes_before_fork() -> None:
    """Fork only while no thread is inside SQLite (``--fork`` forks job processes from a worker
    whose history thread writes to the same file). SQLite keeps its locks' bookkeeping and its
    own mutexes per process, in memory a child inherits. A write transaction open in another
    thread at the fork was, in the child, a lock held by a connection of its own process: its
    writes met "database is locked" for the whole ``busy_timeout`` (5 s a job, then a retry). A
    fork in the middle of any SQLite call (a commit's cleanup, a connect) left SQLite's allocator
    mutex held by a thread the child does not have: its first SQLite call hung until the job's
    timeout (30 s, then a retry). So a fork waits for :func:`unforked` blocks (up to
    ``GUARD_WAIT``: one may wait on the network or on another process's lock) and for every open
    write transaction to end (their length; each bounded by ``WAIT``), the locks taken in one
    order by every forking thread, each noted as soon as it is taken (released after the fork
    whatever happens here)."""
    held: list[Any] = []
    _fork.held = held
    if _guard.acquire(timeout=GUARD_WAIT):
        held.append(_guard)
    for db in sorted(_instances, key=id):
        if db._writer.acquire(timeout=WAIT):
            held.append(db._writer)


def _after_fork_in_parent() -> None:
    for lock in reversed(getattr(_fork, "held", ())):
        lock.release()
    _fork.held = []


def _fresh_locks_in_child() -> None:
    # The child's copies of the locks are held (above, or by a thread that does not exist in
    # the child, when a wait timed out): nobody would release them.
    global _guard
    _fork.held = []
    _guard = threading.RLock()
    for db in list(_instances):
        db._writer = threading.RLock()


os.register_at_fork(before=_between_writes_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_fresh_locks_in_child)


def release_thread_locks() -> int:
    """After a job: roll back a transaction this thread left open and give up the writer lock if
    it still holds it (a timeout raised at the wrong moment, inside peewee's own code). Returns how
    many databases had something to clean up."""
    cleaned = 0
    for db in list(_instances):
        state: Any = db._state  # type: ignore[attr-defined]
        conn = state.conn
        open_tx = conn is not None and conn.in_transaction
        if not (db._owned() or open_tx or state.transactions):
            continue
        cleaned += 1
        try:
            if open_tx:
                conn.rollback()
        except Exception:  # the connection is unusable: drop it, the next job reconnects
            state.reset()
        state.transactions.clear()  # no atomic() of this thread is running: the stack is stale
        while db._owned():
            db._writer.release()
    return cleaned


class SerializedSqliteDatabase(peewee.SqliteDatabase):
    """The writer lock is an ``RLock`` because it knows its owner: whether this thread holds it is
    asked of the lock, never of a flag that a job timeout (an exception raised asynchronously into
    the thread) could interrupt between the acquire and the assignment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer = threading.RLock()
        _instances.add(self)

    def _owned(self) -> bool:
        return bool(self._writer._is_owned())  # type: ignore[attr-defined]

    def begin(self, lock_type: str | None = "IMMEDIATE") -> None:
        # A bounded wait: should a holder ever fail to release (a thread killed at the wrong
        # moment), writers fall back to SQLite's own locking instead of waiting forever.
        try:
            self._writer.acquire(timeout=WAIT)
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
        if self._owned():
            self._writer.release()
