"""Peewee models, bound through :data:`database_proxy` so they run on SQLite, PostgreSQL and MySQL.

Conventions: primary keys are 36-character strings (uuids derived by the caller, e.g. from a job
id, so a rerun inserts nothing new); datetimes are naive UTC with microseconds (:func:`utcnow`).
The schema itself is created by the numbered scripts in ``slimyq/db/migrations``: a change here
needs a new migration there.
"""

from __future__ import annotations

import datetime as dt

import peewee
from peewee import sort_models  # type: ignore[attr-defined]  # missing from peewee's stubs

from slimyq.db.fields import DateTimeUSField, JSONTextField

database_proxy = peewee.DatabaseProxy()

PERSONALITY_MODES = ("helpful", "creative", "professional", "casual", "sarcastic", "technical")


def utcnow() -> dt.datetime:
    """The current time as a naive UTC datetime (the form every datetime column holds)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Conversation(BaseModel):
    id = peewee.CharField(max_length=36, primary_key=True)
    user_id = peewee.CharField(max_length=191)
    title = peewee.CharField(max_length=200, null=True)
    personality_mode = peewee.CharField(max_length=32, default="helpful")
    created_at = DateTimeUSField(default=utcnow)
    updated_at = DateTimeUSField(default=utcnow)

    class Meta:
        table_name = "chat_conversations"
        indexes = ((("user_id", "updated_at"), False),)


class Message(BaseModel):
    id = peewee.CharField(max_length=36, primary_key=True)
    conversation = peewee.ForeignKeyField(
        Conversation,
        column_name="conversation_id",
        on_delete="CASCADE",
        backref="messages",
        index=False,  # covered by the (conversation_id, created_at) index
    )
    user_id = peewee.CharField(max_length=191)
    role = peewee.CharField(max_length=16)
    content = peewee.TextField()
    personality_mode = peewee.CharField(max_length=32, null=True)
    created_at = DateTimeUSField(default=utcnow)

    class Meta:
        table_name = "chat_messages"
        indexes = ((("conversation", "created_at"), False),)


class AuditLog(BaseModel):
    id = peewee.CharField(max_length=36, primary_key=True)
    user_id = peewee.CharField(max_length=191, null=True)
    action = peewee.CharField(max_length=100)
    resource_type = peewee.CharField(max_length=100)
    resource_id = peewee.CharField(max_length=191)
    details = JSONTextField(null=True)
    ip_address = peewee.CharField(max_length=64, null=True)
    user_agent = peewee.TextField(null=True)
    session_id = peewee.CharField(max_length=191, null=True)
    request_id = peewee.CharField(max_length=191, null=True, index=True)
    timestamp = DateTimeUSField(default=utcnow, index=True)
    success = peewee.BooleanField(default=True)
    error_message = peewee.TextField(null=True)

    class Meta:
        table_name = "audit_logs"
        indexes = (
            (("action", "timestamp"), False),
            (("user_id", "timestamp"), False),
        )


JOB_RUN_STATES = ("finished", "failed", "retried", "refused", "canceled", "abandoned", "stopped")


class JobRun(BaseModel):
    """One attempt of one job and its outcome (the job history, written behind by the workers).

    ``(job_id, attempt)`` is unique, so writing the same attempt twice inserts it once. No payload
    content is ever stored here; ``error_message`` is cut to 2,000 characters.
    """

    id = peewee.BigAutoField()
    job_id = peewee.CharField(max_length=128)
    queue = peewee.CharField(max_length=64)
    job_type = peewee.CharField(max_length=100)
    user_id = peewee.CharField(max_length=191, null=True)
    attempt = peewee.IntegerField()
    state = peewee.CharField(max_length=16)  # one of JOB_RUN_STATES
    enqueued_at = DateTimeUSField(null=True)
    started_at = DateTimeUSField(null=True)
    ended_at = DateTimeUSField(null=True, index=True)
    duration_ms = peewee.FloatField(null=True)
    error_type = peewee.CharField(max_length=100, null=True)
    error_message = peewee.TextField(null=True)
    worker = peewee.CharField(max_length=191, null=True)

    class Meta:
        table_name = "job_runs"
        indexes = (
            (("job_id", "attempt"), True),
            (("queue", "ended_at"), False),
            (("job_type", "ended_at"), False),
            (("user_id", "ended_at"), False),
            (("state", "ended_at"), False),
        )


class JobEffect(BaseModel):
    """The record that a job's effect was applied, keyed by the job id, with the result it returned.

    A handler that writes checks it first (:func:`slimyq.jobs.effects.once`): a rerun of the same job
    (retry after the commit, redelivery after a crash) returns the first result and changes nothing,
    whatever happened to the rows since (renamed again, deleted, removed by ``audit cleanup``).
    Nothing deletes these rows: they are what makes a job's effect happen once.
    """

    job_id = peewee.CharField(max_length=128)
    effect = peewee.CharField(max_length=64)  # the handler's name: one job, one effect
    result = JSONTextField()
    created_at = DateTimeUSField(default=utcnow)

    class Meta:
        table_name = "job_effects"
        primary_key = peewee.CompositeKey("job_id", "effect")


MODELS: tuple[type[BaseModel], ...] = (Conversation, Message, AuditLog, JobRun, JobEffect)


def table_names() -> list[str]:
    """Every slimyq table, children first: a safe order for deleting rows or dropping tables."""
    ordered = sort_models(list(MODELS))
    return [model._meta.table_name for model in reversed(ordered)]
