"""Exact text on MySQL/MariaDB: every slimyq table to utf8mb4 with a NO PAD binary collation.

Tables created before this migration took the database's defaults: a case-insensitive, space-
padding collation (``ORD`` and ``ord `` matched ``ord``) and, in a ``latin1`` database, a character
set that turns emoji into ``?``. ``ALTER TABLE ... CONVERT TO`` rewrites the columns and their data
(see :mod:`slimyq.db.mysql`). Nothing to do on PostgreSQL and SQLite, which compare exactly.
The table list is frozen here, as the tables were when this migration was written.
"""

from __future__ import annotations

from typing import Any

import peewee

from slimyq.db.mysql import make_exact

atomic = False  # MySQL DDL commits by itself

TABLES = ["chat_conversations", "chat_messages", "audit_logs", "job_runs", "slimyq_schema_migrations"]


def up(migrator: Any, db: peewee.Database) -> None:
    make_exact(db, TABLES)


def down(migrator: Any, db: peewee.Database) -> None:
    """Nothing: going back to an inexact collation would reopen the hole this closes."""
