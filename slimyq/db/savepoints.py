"""A batched job's savepoint, shared with the job's first transaction block.

A batch (:mod:`slimyq.runtime.batch`) runs each job inside a savepoint of its own. Most handlers
open a transaction block (``write_transaction``, peewee's ``atomic()``) as the first thing they do,
which inside the batch would be a second savepoint right inside the first: two more statements,
and on PostgreSQL and MySQL two more round trips, per job, for nothing. :func:`adopt` hands that
block (``write_transaction``'s; a bare ``db.atomic()`` nests as usual) the job's own savepoint
instead, when nothing has run since it was set:

* the block succeeds: nothing is sent (the savepoint stays set: see :class:`JobSavepoint`);
* the block raises: the job's savepoint is rolled back to, which undoes exactly what the block did
  (nothing ran between the savepoint and the block), as a nested savepoint's rollback would. A
  handler that catches the error and goes on still sees the block's writes undone.

"Nothing has run" is judged by the thread's statement count (:func:`slimyq.db.instrument.statements`:
every statement peewee sends, its own savepoints included), so a block opened after any statement
of the job, or inside another block, gets a savepoint of its own as usual; the transaction depth is
checked too (a ``manual_commit()`` block). A statement sent on a raw DB-API cursor
(``db.cursor().execute(...)``) bypasses peewee and is not counted: a handler that does that and
then catches a failed first block would see that statement undone with it.
"""

from __future__ import annotations

import threading
from typing import Any

import peewee

from slimyq.db import instrument

JOB_SAVEPOINT = "slimyq_job"


class _Fresh(threading.local):
    # (database, transaction depth, statement count, savepoint) while the job's savepoint is unused
    open: tuple[Any, int, int, Any] | None = None


_fresh = _Fresh()


class JobSavepoint:
    """``db.savepoint()`` for one job of a batch, offered to the job's first transaction block.

    On PostgreSQL and MySQL a job that succeeds leaves its savepoint set (:meth:`keep`): releasing
    it would be one more round trip per job, and the batch's commit (or rollback) ends every
    savepoint of the transaction anyway. So each job's savepoint is set inside the previous one's;
    rolling back to a job's savepoint (its failure) undoes that job's writes only, because nothing
    of a later job has run yet. On PostgreSQL every savepoint under which something was written
    then takes a transaction id (more than 64 in one transaction, i.e. batches of more than 64
    jobs, overflow the server's per-backend cache: keep ``concurrency`` at 64 or less there).
    SQLite releases it (a local call, and releasing is what keeps its savepoint journal from
    growing over the whole batch)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        # One name for every job's savepoint (not peewee's random one per savepoint: a uuid4 per
        # job for nothing): setting it again inside a kept one shadows it (PostgreSQL, SQLite) or
        # replaces it (MySQL), and a rollback to the name goes to the newest, this job's. The
        # savepoints a handler opens keep peewee's random names.
        self.sp = peewee._savepoint(db, JOB_SAVEPOINT)  # what db.savepoint() returns, named
        self.release = isinstance(db, peewee.SqliteDatabase)

    def __enter__(self) -> JobSavepoint:
        self.sp.__enter__()
        _fresh.open = (self.db, self.db.transaction_depth(), instrument.statements(), self.sp)
        return self

    def keep(self) -> None:
        """The job succeeded: its writes stay (and, but on SQLite, its savepoint, until the batch's
        transaction ends)."""
        _fresh.open = None
        if self.release:
            self.sp.commit(begin=False)

    def rollback(self) -> None:
        _fresh.open = None
        self.sp.rollback(begin=False)


_INERROR = 3  # psycopg.pq.TransactionStatus.INERROR (libpq's PQTRANS_INERROR; checked in the tests)


def aborted(db: Any) -> bool:
    """PostgreSQL's transaction is in error: a statement failed and nothing was rolled back to a
    savepoint since (a handler caught a database error without a savepoint of its own). Every
    later statement fails, and COMMIT silently rolls everything back. Read from the connection's
    state, no round trip; False on the other databases (a failed statement leaves their
    transaction usable)."""
    if not isinstance(db, peewee.PostgresqlDatabase):
        return False
    conn = getattr(getattr(db, "_state", None), "conn", None)  # this thread's connection, never opened here
    info = getattr(conn, "info", None)  # psycopg 3's (the driver slimyq uses)
    if info is None:
        return False
    return bool(info.transaction_status == _INERROR)


def forget() -> None:
    """The batch's transaction is gone: no savepoint of it can be adopted any more."""
    _fresh.open = None


class _Adopted:
    def __init__(self, sp: Any) -> None:
        self.sp = sp

    def __enter__(self) -> _Adopted:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.sp.rollback(begin=False)  # the savepoint stays set: the batch ends it after the job


def adopted(block: object) -> bool:
    """``block`` (from ``write_transaction``) is the job's own savepoint."""
    return isinstance(block, _Adopted)


def adopt(db: Any) -> _Adopted | None:
    """The job's unused savepoint as a transaction block, or None (open a block of your own)."""
    fresh = _fresh.open
    if fresh is None:
        return None
    _fresh.open = None  # offered once: a later block of the job nests as usual
    owner, depth, count, sp = fresh
    if (owner is not db or not getattr(db, "_slimyq_instrumented", False)  # uncounted: never adopted
            or db.transaction_depth() != depth or instrument.statements() != count):
        return None
    return _Adopted(sp)
