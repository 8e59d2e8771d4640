"""Job history: the ``job_runs`` table, one row per attempt of a job.

A frozen copy of the model as it was when this migration was written (independent of
``slimyq.db.models``).
"""

from __future__ import annotations

from typing import Any

import peewee

from slimyq.db.fields import DateTimeUSField


def _models(db: peewee.Database) -> list[type[peewee.Model]]:
    class JobRun(peewee.Model):
        id = peewee.BigAutoField()
        job_id = peewee.CharField(max_length=128)
        queue = peewee.CharField(max_length=64)
        job_type = peewee.CharField(max_length=100)
        user_id = peewee.CharField(max_length=191, null=True)
        attempt = peewee.IntegerField()
        state = peewee.CharField(max_length=16)
        enqueued_at = DateTimeUSField(null=True)
        started_at = DateTimeUSField(null=True)
        ended_at = DateTimeUSField(null=True, index=True)
        duration_ms = peewee.FloatField(null=True)
        error_type = peewee.CharField(max_length=100, null=True)
        error_message = peewee.TextField(null=True)
        worker = peewee.CharField(max_length=191, null=True)

        class Meta:
            database = db
            table_name = "job_runs"
            indexes = (
                (("job_id", "attempt"), True),
                (("queue", "ended_at"), False),
                (("job_type", "ended_at"), False),
                (("user_id", "ended_at"), False),
                (("state", "ended_at"), False),
            )

    return [JobRun]


def up(migrator: Any, db: peewee.Database) -> None:
    db.create_tables(_models(db))


def down(migrator: Any, db: peewee.Database) -> None:
    db.drop_tables(_models(db))
