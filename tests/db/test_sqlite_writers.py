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
