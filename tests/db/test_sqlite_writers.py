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


def _fork_and_write(path, row_id: str, error_file=None) -> int:
    """Fork a child that writes one row to ``path`` on a connection of its own (as a forked job
    does; at most 5 s: a hang ends it with SIGALRM) and return its exit code (0: written)."""
    import os
    import signal

    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (pytest-timeout's handler could not run)
        signal.alarm(5)
        code = 1
        try:
            child = connect_url(f"sqlite:///{path}")
            child.execute_sql("PRAGMA busy_timeout = 2000")
            with child.atomic():
                Conversation.insert(id=row_id, user_id="u", created_at=utcnow(), updated_at=utcnow()).execute(child)
            code = 0
        except BaseException as exc:
            if error_file is not None:
                error_file.write_text(repr(exc))
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_child_forked_during_a_write_transaction_writes_at_once(tmp_path) -> None:
    """``--fork`` forks job processes from a worker whose history thread writes to the same
    SQLite file. SQLite keeps its locks' bookkeeping per process: a child forked while another
    thread's write transaction was open inherited it as a lock held by a connection of its own
    process, and its writes met "database is locked" for the whole busy_timeout (5 s a job, then
    a retry). A fork now waits for the open write transactions to end."""
    import time

    db = connect_url(f"sqlite:///{tmp_path / 'f.sqlite3'}")
    migrate(db)
    opened, forked = threading.Event(), threading.Event()

    def writer() -> None:  # a transaction that is still open when the fork is asked for
        with db.atomic():
            Conversation.insert(id="parent", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute(db)
            opened.set()
            forked.wait(0.3)

    thread = threading.Thread(target=writer)
    thread.start()
    assert opened.wait(5)
    started = time.monotonic()
    error = tmp_path / "child-error"
    code = _fork_and_write(tmp_path / "f.sqlite3", "child", error)  # forks, then waits for the child
    waited_fork = time.monotonic() - started
    forked.set()
    thread.join()
    assert code == 0, error.read_text() if error.exists() else "the child died"
    assert waited_fork >= 0.2  # the fork waited for the parent's transaction to commit
    assert {row[0] for row in db.execute_sql("SELECT id FROM chat_conversations")} == {"parent", "child"}
    db.close()


def test_threads_forking_at_once_beside_a_writer_leave_no_lock_held(tmp_path) -> None:
    """``--fork`` at concurrency 10: threads fork at once while another thread writes. Each fork
    takes and gives back the writer lock as its own (a lock given back by another thread's fork
    would leave this one's held: every later write would wait WAIT seconds)."""

    db = connect_url(f"sqlite:///{tmp_path / 'g.sqlite3'}")
    migrate(db)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            with db.atomic():
                Conversation.insert(id=f"p{i}", user_id="u", created_at=utcnow(), updated_at=utcnow()).execute(db)
            i += 1

    def fork_one(n: int, codes: list[int]) -> None:
        codes.append(_fork_and_write(tmp_path / "g.sqlite3", f"c{n}"))

    background = threading.Thread(target=writer)
    background.start()
    codes: list[int] = []
    for _ in range(3):
        forks = [threading.Thread(target=fork_one, args=(n, codes)) for n in range(len(codes), len(codes) + 8)]
        for t in forks:
            t.start()
        for t in forks:
            t.join()
    stop.set()
    background.join()
    assert codes == [0] * 24
    assert db._writer.acquire(blocking=False)  # nobody's fork left it held
    db._writer.release()
    children = db.execute_sql("SELECT COUNT(*) FROM chat_conversations WHERE id LIKE 'c%'").fetchone()[0]
    assert children == 24
    db.close()


def test_children_forked_beside_a_thread_inside_sqlite_never_hang(tmp_path) -> None:
    """A fork landing inside any SQLite call of another thread (a connect, a commit's cleanup)
    leaves SQLite's own mutexes held in the child: its first SQLite call hangs. The history
    writer of a ``--fork`` worker works inside ``unforked()``, and a fork waits for it. (With
    ``unforked`` replaced by a null context, half of these children hung.)"""

    from slimyq.db import sqlite

    path = tmp_path / "h.sqlite3"
    migrate(connect_url(f"sqlite:///{path}"))
    stop = threading.Event()

    def history_like() -> None:  # connects, writes, closes, again and again (as after errors)
        i = 0
        while not stop.is_set():
            with sqlite.unforked():
                db = connect_url(f"sqlite:///{path}")
                with db.atomic():
                    Conversation.insert(id=f"p{i}", user_id="u", created_at=utcnow(),
                                        updated_at=utcnow()).execute(db)
                db.close()
            i += 1

    background = threading.Thread(target=history_like)
    background.start()
    codes = []
    try:
        for n in range(60):
            codes.append(_fork_and_write(path, f"c{n}"))
    finally:
        stop.set()
        background.join()
    assert codes == [0] * 60
