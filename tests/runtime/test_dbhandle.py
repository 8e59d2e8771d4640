"""The worker's shared database handle: its open lock survives a job timeout at any point."""

from __future__ import annotations

import threading
from typing import Any

import peewee
import pytest

from slimyq.config import Settings
from slimyq.runtime import dbhandle


class JobTimeout(Exception):
    """Stands for the exception a job timeout raises asynchronously into the thread."""


class TimeoutRightAfterAcquire:
    """A lock whose first successful acquire is followed by a job timeout before the caller's next
    bytecode: the moment an asynchronous exception can land after ``acquire()`` returned True."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.armed = True

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self.lock.acquire(blocking, timeout)
        if got and self.armed:
            self.armed = False
            raise JobTimeout
        return got

    def release(self) -> None:
        self.lock.release()

    def _is_owned(self) -> bool:
        return bool(self.lock._is_owned())  # type: ignore[attr-defined]


def test_a_timeout_right_after_the_open_lock_is_taken_leaves_it_free(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    opened: list[peewee.Database] = []

    def open_database(settings: Settings) -> peewee.Database:
        db = peewee.SqliteDatabase(str(tmp_path / "jobs.db"))
        opened.append(db)
        return db

    monkeypatch.setattr("slimyq.db.open_database", open_database)
    handle = dbhandle.JobDatabase(Settings())
    lock = TimeoutRightAfterAcquire()
    handle._lock = lock  # type: ignore[assignment]
    with pytest.raises(JobTimeout):
        handle.get()
    assert not lock._is_owned() and opened == []
    # Another job thread takes the lock at once and opens the database.
    got: list[Any] = []
    other = threading.Thread(target=lambda: got.append(handle.get()))
    other.start()
    other.join()
    assert got == opened and len(opened) == 1
    assert handle.get() is opened[0]


def test_a_failed_open_releases_the_lock_for_the_next_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    calls: list[int] = []

    def open_database(settings: Settings) -> peewee.Database:
        calls.append(1)
        if len(calls) == 1:
            raise peewee.OperationalError("database unavailable")
        return peewee.SqliteDatabase(str(tmp_path / "jobs.db"))

    monkeypatch.setattr("slimyq.db.open_database", open_database)
    handle = dbhandle.JobDatabase(Settings())
    with pytest.raises(peewee.OperationalError):
        handle.get()
    got: list[Any] = []
    other = threading.Thread(target=lambda: got.append(handle.get()))
    other.start()
    other.join()
    assert len(calls) == 2 and isinstance(got[0], peewee.SqliteDatabase)


def test_a_child_forked_while_the_lock_was_held_gets_a_fresh_one() -> None:
    handle = dbhandle.JobDatabase(Settings())
    held = handle._lock
    dbhandle._fresh_locks_in_child()
    assert handle._lock is not held and handle._lock.acquire(blocking=False)
    handle._lock.release()
