"""Initial schema: conversations, messages and the audit log.

A frozen copy of the models as they were when this migration was written (deliberately independent
of ``slimyq.db.models``): later model changes get their own numbered migration.
"""

from __future__ import annotations

from typing import Any

import peewee

from slimyq.db.fields import DateTimeUSField, JSONTextField


def _models(db: peewee.Database) -> list[type[peewee.Model]]:
    class Conversation(peewee.Model):
        id = peewee.CharField(max_length=36, primary_key=True)
        user_id = peewee.CharField(max_length=191)
        title = peewee.CharField(max_length=200, null=True)
        personality_mode = peewee.CharField(max_length=32, default="helpful")
        created_at = DateTimeUSField()
        updated_at = DateTimeUSField()

        class Meta:
            database = db
            table_name = "chat_conversations"
            indexes = ((("user_id", "updated_at"), False),)

    class Message(peewee.Model):
        id = peewee.CharField(max_length=36, primary_key=True)
        conversation = peewee.ForeignKeyField(
            Conversation, column_name="conversation_id", on_delete="CASCADE", index=False
        )
        user_id = peewee.CharField(max_length=191)
        role = peewee.CharField(max_length=16)
        content = peewee.TextField()
        personality_mode = peewee.CharField(max_length=32, null=True)
        created_at = DateTimeUSField()

        class Meta:
            database = db
            table_name = "chat_messages"
            indexes = ((("conversation", "created_at"), False),)

    class AuditLog(peewee.Model):
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
        timestamp = DateTimeUSField(index=True)
        success = peewee.BooleanField(default=True)
        error_message = peewee.TextField(null=True)

        class Meta:
            database = db
            table_name = "audit_logs"
            indexes = ((("action", "timestamp"), False), (("user_id", "timestamp"), False))

    return [Conversation, Message, AuditLog]


def up(migrator: Any, db: peewee.Database) -> None:
    db.create_tables(_models(db))


def down(migrator: Any, db: peewee.Database) -> None:
    db.drop_tables(_models(db))
