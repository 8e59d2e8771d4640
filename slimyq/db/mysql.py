"""Exact text on MySQL/MariaDB: utf8mb4 tables with a NO PAD binary collation.

A table created with the server's defaults compares ``user_id = 'ord'`` under a case- and
accent-insensitive collation (``utf8mb4_general_ci``: ``ORD`` and ``Ord`` match) that pads with
spaces (``ord `` matches too), and in a ``latin1`` database stores an emoji as ``?``. slimyq's
tables are converted (by a migration) to utf8mb4 with a binary collation that does not pad:
``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin`` on MySQL 8 (``utf8mb4_bin`` is not enough:
it is PAD SPACE). Comparisons, grouping and uniqueness are then exact, as on PostgreSQL and SQLite.

:func:`require_exact_text` is the check that workers and commands run on connecting: a column left
in another character set or collation, or a connection that is not utf8mb4, is refused with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee

from slimyq.errors import SlimyqError

EXACT_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")  # MariaDB >= 10.2, MySQL >= 8.0


def is_mysql(db: peewee.Database) -> bool:
    return isinstance(db, peewee.MySQLDatabase)


def _rows(db: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return list(db.execute_sql(sql, params).fetchall())


def exact_collation(db: peewee.Database) -> str:
    """The server's NO PAD binary utf8mb4 collation, or :class:`SlimyqError` saying what to run."""
    marks = ", ".join(["%s"] * len(EXACT_COLLATIONS))
    found = {r[0] for r in _rows(db, f"SELECT COLLATION_NAME FROM information_schema.COLLATIONS "
                                     f"WHERE COLLATION_NAME IN ({marks})", EXACT_COLLATIONS)}
    for name in EXACT_COLLATIONS:
        if name in found:
            return name
    raise SlimyqError(
        "this MySQL server has no NO PAD binary utf8mb4 collation, so user ids could not be compared "
        "exactly; use MariaDB 10.2 or later (utf8mb4_nopad_bin) or MySQL 8.0 or later (utf8mb4_0900_bin)"
    )


def make_exact(db: peewee.Database, tables: list[str]) -> None:
    """Convert ``tables`` (and their data) to utf8mb4 with the exact collation; nothing elsewhere.

    MySQL will not change the character set of a column a foreign key uses, even with
    ``FOREIGN_KEY_CHECKS = 0``: the keys between these tables are dropped, the tables converted,
    and the keys put back as they were.
    """
    if not is_mysql(db):
        return
    collation = exact_collation(db)
    existing = [t for t in tables if t in set(db.get_tables())]
    keys = _foreign_keys(db, existing)
    for key in keys:
        _rows(db, f"ALTER TABLE `{key.table}` DROP FOREIGN KEY `{key.name}`")
    for table in existing:
        _rows(db, f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")
    for key in keys:
        _rows(db, key.add_sql())


@dataclass(frozen=True)
class _ForeignKey:
    table: str
    name: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    on_update: str

    def add_sql(self) -> str:
        cols = ", ".join(f"`{c}`" for c in self.columns)
        refs = ", ".join(f"`{c}`" for c in self.ref_columns)
        return (
            f"ALTER TABLE `{self.table}` ADD CONSTRAINT `{self.name}` FOREIGN KEY ({cols}) "
            f"REFERENCES `{self.ref_table}` ({refs}) ON DELETE {self.on_delete} ON UPDATE {self.on_update}"
        )


def _foreign_keys(db: peewee.Database, tables: list[str]) -> list[_ForeignKey]:
    """Foreign keys from or to ``tables``, in this database."""
    if not tables:
        return []
    marks = ", ".join(["%s"] * len(tables))
    rows = _rows(
        db,
        "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, "
        "r.DELETE_RULE, r.UPDATE_RULE FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA "
        "AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME "
        "WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL "
        f"AND (k.TABLE_NAME IN ({marks}) OR k.REFERENCED_TABLE_NAME IN ({marks})) "
        "ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        (*tables, *tables),
    )
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault((row[0], row[1]), []).append(row)
    return [
        _ForeignKey(table, name, tuple(r[2] for r in rs), rs[0][3], tuple(r[4] for r in rs), rs[0][5], rs[0][6])
        for (table, name), rs in grouped.items()
    ]


def connection_problems(db: peewee.Database) -> list[str]:
    """What is wrong with the connection's character sets (empty when it is utf8mb4 throughout)."""
    if not is_mysql(db):
        return []
    charset = _rows(db, "SELECT @@character_set_client, @@character_set_connection, @@character_set_results")
    bad = sorted({str(c) for c in charset[0] if c != "utf8mb4"}) if charset else []
    return [f"the connection uses character set {', '.join(bad)} (need utf8mb4)"] if bad else []


def table_problems(db: peewee.Database, tables: list[str]) -> list[str]:
    """Columns of ``tables`` not in utf8mb4 with an exact collation (empty when all are)."""
    if not is_mysql(db) or not tables:
        return []
    marks = ", ".join(["%s"] * len(tables))
    columns = _rows(
        db,
        "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({marks}) AND COLLATION_NAME IS NOT NULL "
        "ORDER BY TABLE_NAME, ORDINAL_POSITION",
        tuple(tables),
    )
    need = " or ".join(EXACT_COLLATIONS)
    return [
        f"column {table}.{column} uses {collation} (need utf8mb4 with {need})"
        for table, column, charset_name, collation in columns
        if charset_name != "utf8mb4" or collation not in EXACT_COLLATIONS
    ]


def text_problems(db: peewee.Database, tables: list[str]) -> list[str]:
    """What would make text inexact or lossy on this connection (empty when all is well)."""
    return connection_problems(db) + table_problems(db, tables)


def require_exact_connection(db: peewee.Database) -> None:
    problems = connection_problems(db)
    if problems:
        raise SlimyqError(
            f"refusing to use this MySQL database: {problems[0]}, so text would not be stored exactly; "
            "remove the charset parameter from DATABASE_URL or set ?charset=utf8mb4"
        )


def require_exact_text(db: peewee.Database, tables: list[str]) -> None:
    """Refuse a MySQL connection on which slimyq's text would be compared or stored inexactly."""
    require_exact_connection(db)
    problems = table_problems(db, tables)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SlimyqError(
            f"refusing to use this MySQL database: {problems[0]}{more}, so text would not be stored or "
            "compared exactly; run `slimyq db migrate` (it converts slimyq's tables)"
        )
