"""Field types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB.

The migrations import these too: never change the DDL a field emits, add a new field type instead.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import peewee


class DateTimeUSField(peewee.DateTimeField):
    """A naive UTC datetime with microseconds on every backend.

    PostgreSQL's ``TIMESTAMP`` and SQLite's text already keep microseconds; MySQL/MariaDB need
    ``DATETIME(6)`` (a plain ``DATETIME`` truncates to whole seconds). Aware datetimes are
    converted to UTC and stored naive, so every value in the database is naive UTC.
    """

    def ddl_datatype(self, ctx: peewee.Context) -> peewee.SQL:
        if _is_mysql(self, ctx):
            return peewee.SQL("DATETIME(6)")
        result: peewee.SQL = super().ddl_datatype(ctx)
        return result

    def db_value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return super().db_value(value)  # type: ignore[no-untyped-call]


def _is_mysql(field: peewee.Field, ctx: peewee.Context) -> bool:
    model = getattr(field, "model", None)
    database = getattr(getattr(model, "_meta", None), "database", None)
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    if isinstance(database, peewee.Database):
        return isinstance(database, peewee.MySQLDatabase)
    # An unbound field (``migrator.add_column``): only MySQL quotes identifiers with backticks.
    return bool(ctx is not None and ctx.state.quote == "``")


class JSONTextField(peewee.TextField):
    """JSON kept as text: dumped on save, loaded on read. Portable where native JSON types differ.
    None is NULL in a nullable column and JSON ``null`` in a NOT NULL one (an effect's result:
    a ``once()`` block that returns nothing)."""

    def db_value(self, value: Any) -> Any:
        if value is None:
            return None if self.null else "null"
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            value = value.decode("utf-8")
        if isinstance(value, str):
            return json.loads(value)
        return value
