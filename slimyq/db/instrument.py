"""The one hook that measures the database: every statement peewee runs, and every connection.

:func:`install` wraps a database's statement, connect and close methods, so SQLite, PostgreSQL and
MySQL are measured the same way, whatever class ``playhouse.db_url`` picked. Per statement it
costs two clock reads and one locked dict update (:mod:`slimyq.obs.ops`); a statement that fails
as a conflict (a deadlock) is counted per thread (:func:`conflicts`); with tracing on
(:mod:`slimyq.obs.trace`) it also opens a client span following OpenTelemetry's database
conventions (``db.system.name``, ``db.operation.name``; the statement text with its placeholders,
never the parameter values).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import peewee

from slimyq.db.conflicts import TransactionLost, conflict
from slimyq.obs import ops

OPERATIONS = frozenset({"select", "insert", "update", "delete", "begin", "commit", "rollback", "savepoint",
                        "release", "create", "alter", "drop", "pragma", "set", "show", "with", "replace"})


class _Count(threading.local):
    n = 0
    conflicts = 0
    lost: Any = None  # (database, its outermost transaction block) MySQL rolled back on a deadlock
    lost_commits = 0  # COMMITs of a transaction the database had already rolled back (see commit)


_count = _Count()


def statements() -> int:
    """How many statements this thread has sent through an instrumented database (a running count:
    compare two readings)."""
    return _count.n


def conflicts() -> int:
    """How many of this thread's statements failed as a conflict (:mod:`slimyq.db.conflicts`: a
    deadlock, a serialization failure), caught or not: a running count, compare two readings."""
    return _count.conflicts


def _refuse_in_lost_transaction() -> None:
    """On MySQL a deadlock rolls the whole transaction back, but peewee's transaction blocks stay
    open: a statement sent in them (a handler that caught the deadlock) would run on its own and
    commit at once, outside what the job's rollback and rerun undo. Until that transaction's
    outermost block has ended (or the batch abandons it), such a statement is refused."""
    db, outermost = _count.lost
    transactions = db._state.transactions
    if transactions and transactions[0] is outermost:
        raise TransactionLost("this transaction was rolled back by a deadlock; its statements are refused until "
                              "it ends (the job runs again)")
    _count.lost = None


def lost_commits() -> int:
    """How many of this thread's COMMITs ended a transaction the database had rolled back already:
    on PostgreSQL one left in error (a failed statement caught, nothing rolled back to a savepoint
    since: its COMMIT is a silent rollback), on MySQL one a deadlock rolled back. What was written
    in it did not happen, whatever its handler returned. A running count: compare two readings."""
    return _count.lost_commits


def _rolled_back_already(db: Any, backend: str) -> bool:
    if backend == "mysql":
        lost = _count.lost
        return lost is not None and lost[0] is db
    from slimyq.db.savepoints import aborted  # (it imports this module)

    return aborted(db)  # PostgreSQL's transaction in error; False elsewhere


def forget_lost() -> None:
    """The thread's transaction has been abandoned (rolled back and forgotten): statements run again."""
    _count.lost = None


def backend_of(db: Any) -> str:
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgresql"
    if isinstance(db, peewee.MySQLDatabase):
        return "mysql"
    return "other"


def operation(sql: str) -> str:
    """The statement's kind from its first word: ``select``, ``insert`` ... or ``other``."""
    word = sql[:24].lstrip().partition(" ")[0].lower()
    return word if word in OPERATIONS else "other"


def install(db: peewee.Database) -> peewee.Database:
    """Measure ``db`` from now on (before it connects, so its connection is counted).

    The three methods peewee funnels everything through are wrapped on the instance, once (a
    subclass cannot be swapped in: Python refuses the ``__class__`` assignment for peewee's slotted
    classes).
    """
    if getattr(db, "_slimyq_instrumented", False):
        return db
    backend = backend_of(db)
    run: Any = db.execute_sql
    connect: Any = db._connect  # type: ignore[attr-defined]
    close: Any = db._close  # type: ignore[attr-defined]
    from slimyq.obs import trace

    def execute_sql(sql: str, params: Any = None) -> Any:
        if _count.lost is not None and _count.lost[0] is db:
            _refuse_in_lost_transaction()
        _count.n += 1
        op = operation(sql)
        span = trace.db_span(backend, op, sql, db) if trace.enabled else None
        start = time.perf_counter()
        try:
            cursor = run(sql, params)
        except BaseException as exc:
            ops.db_query(backend, op, time.perf_counter() - start, error=True)
            if conflict(exc):
                _count.conflicts += 1
                if backend == "mysql" and db._state.transactions:  # type: ignore[attr-defined]
                    _count.lost = (db, db._state.transactions[0])  # type: ignore[attr-defined]
            if span is not None:
                trace.end(span, exc)
            raise
        ops.db_query(backend, op, time.perf_counter() - start, error=False)
        if span is not None:
            trace.end(span)
        return cursor

    def _connect() -> Any:
        conn = connect()
        ops.connection_opened(backend)
        return conn

    def _close(conn: Any) -> None:
        try:
            close(conn)
        finally:
            ops.connection_closed(backend)

    real_commit: Any = db.commit

    def commit() -> Any:
        if _rolled_back_already(db, backend):
            _count.lost_commits += 1
            _count.lost = None  # the transaction ends here
        return real_commit()

    vars(db).update(execute_sql=execute_sql, _connect=_connect, _close=_close, commit=commit,
                    _slimyq_instrumented=True)
    return db
