"""The lock that keeps two audit cleanups from running at once, on every backend.

PostgreSQL: a session advisory lock (``pg_try_advisory_lock``); MySQL/MariaDB: ``GET_LOCK(name,
0)``; SQLite: ``flock`` on ``<database file>.audit-cleanup-lock`` next to the database. All three
are released when the holder's connection or process dies, so a killed cleanup never leaves a
stale lock behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import peewee

from slimyq.audit._sql import real_database

PG_LOCK_KEY = 0x736C696D79710002  # "slimyq" + 2 (1 is the migration lock)
_POLL = 0.1


def _sql(db: Any, sql: str, params: tuple[Any, ...]) -> Any:
    return db.execute_sql(sql, params)


class _Lock:
    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self._file: IO[str] | None = None

    def try_acquire(self) -> bool:
        db = self.db
        if isinstance(db, peewee.PostgresqlDatabase):
            row = _sql(db, "SELECT pg_try_advisory_lock(%s)", (PG_LOCK_KEY,)).fetchone()
            return bool(row and row[0])
        if isinstance(db, peewee.MySQLDatabase):
            row = _sql(db, "SELECT GET_LOCK(%s, 0)", (self._mysql_name(),)).fetchone()
            return bool(row and row[0] == 1)
        return self._flock()

    def release(self) -> None:
        db = self.db
        try:
            if isinstance(db, peewee.PostgresqlDatabase):
                _sql(db, "SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,))
            elif isinstance(db, peewee.MySQLDatabase):
                _sql(db, "SELECT RELEASE_LOCK(%s)", (self._mysql_name(),))
            elif self._file is not None:
                import fcntl

                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
                self._file = None
        except (peewee.DatabaseError, peewee.InterfaceError, OSError):
            pass  # the connection is gone, and the lock with it

    def _mysql_name(self) -> str:
        return f"slimyq_audit_cleanup:{self.db.database}"[:64]

    def _flock(self) -> bool:
        path = str(self.db.database or "")
        if not path or path == ":memory:" or path.startswith("file:"):
            return True  # a private in-memory database: nobody else can clean it
        import fcntl

        fh = open(f"{path}.audit-cleanup-lock", "a")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._file = fh
        return True


@contextmanager
def cleanup_lock(db: peewee.Database, wait: float = 0.0) -> Iterator[bool]:
    """Yields True holding the lock, or False when another cleanup held it for ``wait`` seconds."""
    lock = _Lock(real_database(db))
    deadline = time.monotonic() + max(wait, 0.0)
    while not lock.try_acquire():
        left = deadline - time.monotonic()
        if left <= 0:
            yield False
            return
        time.sleep(min(_POLL, left))
    try:
        yield True
    finally:
        lock.release()
