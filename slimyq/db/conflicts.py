"""Which database errors are conflicts: the database rolled a transaction back because it met
another one (a deadlock, a serialization failure), and is fine.

Such an error is no outage and no fault of the job: the job runs again without using up an
attempt, no connection is dropped (:mod:`slimyq.runtime.execute` classifies it), and a batch that
meets one ends there (:mod:`slimyq.runtime.batch`). Every statement peewee sends is checked on
failure (:mod:`slimyq.db.instrument` counts a thread's conflicts), so a handler that catches a
deadlock and goes on still ends its batch: on MySQL the whole transaction is gone by then.
"""

from __future__ import annotations

import peewee

CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})  # PostgreSQL: deadlock_detected, serialization_failure
MYSQL_DEADLOCK = 1213  # MySQL/MariaDB's ER_LOCK_DEADLOCK (its whole transaction was rolled back)
MAX_CHAIN = 16


def conflict(exc: BaseException) -> bool:
    """``exc``, or an error it was raised from or while handling, is a conflict, and no outage
    came after it.

    The chain is followed (``__cause__``, else ``__context__``) because the conflict is often not
    the error raised last: on MySQL the victim's whole transaction is gone, so the rollback to a
    savepoint of it that follows fails next (``SAVEPOINT ... does not exist``), with the deadlock
    as its context. An outage met on the way (the connection lost while handling the deadlock)
    decides instead: that error is no conflict, the connection must be dropped. At each link the
    driver's own error is read too (peewee keeps it in ``.orig``)."""
    e: BaseException | None = exc
    for _ in range(MAX_CHAIN):
        if e is None:
            return False
        orig = getattr(e, "orig", None)
        links = (e, orig) if isinstance(orig, BaseException) else (e,)
        if any(_is_conflict(x) for x in links):
            return True
        if any(outage(x) for x in links):
            return False
        e = e.__cause__ or e.__context__
    return False


class TransactionLost(peewee.OperationalError):
    """A statement sent after a deadlock, in the transaction MySQL has already rolled back: refused
    (:mod:`slimyq.db.instrument`) instead of run outside any transaction and committed on its own,
    so a handler that caught the deadlock cannot go on writing. A conflict, like the deadlock."""


def _is_conflict(e: BaseException) -> bool:
    if isinstance(e, TransactionLost):
        return True
    if getattr(e, "sqlstate", None) in CONFLICT_SQLSTATES:
        return True
    return type(e).__module__.startswith("pymysql") and bool(e.args) and e.args[0] == MYSQL_DEADLOCK


def outage(e: BaseException) -> bool:
    """A driver error that says the connection or the server failed (not the statement): psycopg's
    connection errors (no SQLSTATE, class 08, an operator's shutdown 57P), MySQL's client errors
    (2000-2999: lost connection, server gone away; an ``InterfaceError``: the connection is closed)."""
    from slimyq.errors import Unreachable

    if isinstance(e, Unreachable):
        return True
    module = type(e).__module__
    if module.startswith("psycopg"):
        state = getattr(e, "sqlstate", None)
        if state is None:
            return any(c.__name__ in {"OperationalError", "InterfaceError"} for c in type(e).__mro__)
        return isinstance(state, str) and (state.startswith("08") or state.startswith("57P"))
    if module.startswith("pymysql"):
        if type(e).__name__ == "InterfaceError":  # (0, ''): the connection is closed
            return True
        code = e.args[0] if e.args else None
        return isinstance(code, int) and 2000 <= code < 3000
    return False
