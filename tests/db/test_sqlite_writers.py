"""SQLite writers of one process queue on a lock (no busy-handler sleeps, no lock-upgrade errors)."""

from __future__ import annotations

import threading

import peewee
import pytest

from slimyq.db import connect_url, database_proxy, migrate
from slimyq.db.models import Conversation, utcnow
from slimyq.db.sqlite import SerializedSqliteDatabase


@pytest.fixture
def sqlite_db(tmp_path):
    db = connect_url(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    migrate(db)
    database_proxy.initialize(db)
    yield db
    db.close()


def test_sqlite_urls_get_the_serialized_database(sqlite_db) -> None:
    assert isinstance(sqlite_db, SerializedSqliteDatabase)


def test_many_threads_read_then_write_without_errors(sqlite_db) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                with sqlite_db.atomic():  # read, then write: the pattern that upgrades a lock
                    Conversation.select().where(Conversation.user_id == f"u{n}").count()
                    Conversation.insert(id=f"{n}-{i}", user_id=f"u{n}", created_at=utcnow(),
                                        updated_at=utcnow()).execute()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            sqlite_db.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Conversation.select().count() == 250


def test_lock_is_released_after_rollback_and_failed_commit(sqlite_db) -> None:
    with pytest.raises(peewee.IntegrityError), sqlite_db.atomic():
        Conversation.insert(id="dup", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute()
        Conversation.insert(id="dup", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute()
    assert sqlite_db._writer.acquire(timeout=0.1)  # nobody holds it
    sqlite_db._writer.release()
    with sqlite_db.atomic():
        Conversation.insert(id="ok", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute()
    assert Conversation.select().count() == 1


def _free_elsewhere(db: SerializedSqliteDatabase) -> bool:
    """Can another thread take the writer lock right now?"""
    got: list[bool] = []

    def take() -> None:
        ok = db._writer.acquire(timeout=0.2)
        got.append(ok)
        if ok:
            db._writer.release()

    t = threading.Thread(target=take)
    t.start()
    t.join()
    return got == [True]


class _Timeout(Exception):
    pass


class _InterruptedRightAfterAcquire:
    """The writer lock, with a job timeout landing the instant ``acquire`` returns (where an
    exception raised asynchronously into the thread arrives: after the C call, before the next
    statement)."""

    def __init__(self, lock: object) -> None:
        self.lock = lock

    def acquire(self, timeout: float = -1) -> bool:
        self.lock.acquire(timeout=timeout)  # type: ignore[attr-defined]
        raise _Timeout

    def release(self) -> None:
        self.lock.release()  # type: ignore[attr-defined]

    def _is_owned(self) -> bool:
        return bool(self.lock._is_owned())  # type: ignore[attr-defined]


def test_a_timeout_landing_right_after_the_acquire_does_not_leak_the_lock(sqlite_db) -> None:
    real = sqlite_db._writer
    sqlite_db._writer = _InterruptedRightAfterAcquire(real)
    with pytest.raises(_Timeout), sqlite_db.atomic():
        Conversation.insert(id="never", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute()
    sqlite_db._writer = real
    assert _free_elsewhere(sqlite_db)
    with sqlite_db.atomic():
        Conversation.insert(id="ok", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute()
    assert Conversation.select().count() == 1


def test_release_thread_locks_cleans_up_a_transaction_left_open(sqlite_db) -> None:
    from slimyq.db.sqlite import release_thread_locks

    sqlite_db.begin()  # as if a timeout hit peewee's atomic() between its body and its rollback
    Conversation.insert(id="half", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute()
    assert not _free_elsewhere(sqlite_db)
    assert release_thread_locks() == 1
    assert _free_elsewhere(sqlite_db) and not sqlite_db.in_transaction()
    assert Conversation.select().count() == 0  # rolled back
    assert release_thread_locks() == 0
