"""Effect-once markers: the ``job_effects`` table, one row per job that changed something.

A frozen copy of the model as it was when this migration was written (independent of
``slimyq.db.models``); on MySQL the new table gets the exact-text collation of 0003 whatever the
database's default.
"""

from __future__ import annotations

from typing import Any

import peewee

from slimyq.db.fields import DateTimeUSField, JSONTextField
from slimyq.db.mysql import make_exact

atomic = False  # MySQL DDL commits by itself


def _models(db: peewee.Database) -> list[type[peewee.Model]]:
    class JobEffect(peewee.Model):
        job_id = peewee.CharField(max_length=128)
        effect = peewee.CharField(max_length=64)
        result = JSONTextField()
        created_at = DateTimeUSField()

        class Meta:
            database = db
            table_name = "job_effects"
            primary_key = peewee.CompositeKey("job_id", "effect")

    return [JobEffect]


def up(migrator: Any, db: peewee.Database) -> None:
    db.create_tables(_models(db))
    make_exact(db, ["job_effects"])


def down(migrator: Any, db: peewee.Database) -> None:
    db.drop_tables(_models(db))
