"""A handler's hottest statement with its SQL built by peewee once, not once per job.

Building a query costs peewee more CPU than a database on the same host takes to run it (on
PostgreSQL, a conversation's insert: about a tenth of a database job's worker CPU). :func:`insert_ignore`
is ``Model.insert(**values).on_conflict_ignore().as_rowcount().execute()``: the first call per
model, columns and database class builds it with peewee and keeps the SQL if peewee's own
parameters for it are exactly the values' database forms in the order of the columns its SQL
names; every later call sends that SQL with the values converted by the same fields. A statement
where that cannot be shown (a column peewee adds by itself: a default; SQL it shapes otherwise)
keeps peewee's path, call after call.
"""

from __future__ import annotations

from typing import Any

import peewee

_UNSEEN = object()
# (database class, model, value names) -> (SQL, the fields of its parameters, in order) or None (peewee's path)
_SQL: dict[tuple[type, type, tuple[str, ...]], Any] = {}


def insert_ignore(model: type[peewee.Model], **values: Any) -> int:
    """Insert one row unless its key is there already; the rows inserted (0 or 1)."""
    db: Any = model._meta.database
    db = getattr(db, "obj", db)  # the database behind the models' proxy
    key = (type(db), model, tuple(values))
    known = _SQL.get(key, _UNSEEN)
    if known is _UNSEEN or known is None:
        query = model.insert(**values).on_conflict_ignore().as_rowcount()
        if known is _UNSEEN:
            _SQL[key] = _compiled(db, model, query, values)
        return int(query.execute())
    sql, fields = known
    cursor = db.execute_sql(sql, [field.db_value(values[field.name]) for field in fields])
    return int(db.rows_affected(cursor))


def sql_as_executed(db: Any, query: Any) -> tuple[str, list[Any]]:
    """``query``'s SQL and parameters as peewee sends them when it runs an ``as_rowcount()`` insert:
    a model's insert gets ``RETURNING`` its primary key when it is made, and peewee's
    ``Insert._execute`` strips that again before it runs (a row count does not want the rows)."""
    if getattr(query, "_as_rowcount", False) and not getattr(query, "_return_cursor", False):
        query._returning = None
    sql, params = db.get_sql_context().sql(query).query()
    return sql, list(params)


def _compiled(db: Any, model: type[peewee.Model], query: Any, values: dict[str, Any]) -> tuple[str, list[Any]] | None:
    sql, params = sql_as_executed(db, query)
    head, found, _ = sql.partition(") VALUES (")
    if not found or "(" not in head:
        return None
    open_q, close_q = db.quote
    columns = [name.strip().removeprefix(open_q).removesuffix(close_q) for name in head.partition("(")[2].split(",")]
    by_column = {field.column_name: field for field in model._meta.sorted_fields}
    found_fields = [by_column.get(column) for column in columns]
    if any(field is None for field in found_fields):  # (not `None in`: a field's == builds SQL)
        return None
    fields: list[Any] = found_fields
    if sorted(field.name for field in fields) != sorted(values) or sql.count(db.param) != len(fields):
        return None
    expected = [field.db_value(values[field.name]) for field in fields]
    return (sql, fields) if params == expected else None
