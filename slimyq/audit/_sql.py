"""Small helpers over peewee shared by the audit modules."""

from __future__ import annotations

from typing import Any

import peewee


def real_database(db: peewee.Database) -> peewee.Database:
    """The database behind a :class:`peewee.DatabaseProxy` (or ``db`` itself)."""
    if isinstance(db, peewee.DatabaseProxy):
        obj: peewee.Database = db.obj
        return obj
    return db


def rows_of(query: Any) -> list[tuple[Any, ...]]:
    """A ``.tuples()`` query's rows (peewee's stubs type them as model instances)."""
    return [tuple(row) for row in query.tuples()]
