"""Handlers of the ``database`` queue: conversations and messages.

Effect-once: rows a job creates have ids derived from the job id and are inserted with
on-conflict-ignore inside one transaction, so a rerun (retry after commit, redelivery after a
crash) leaves one row and returns what the first run returned.
"""

from __future__ import annotations

from typing import Any

import peewee

from slimyq.db.models import AuditLog, Conversation, Message, utcnow
from slimyq.jobs.base import AccessDenied, JobContext, iso, rq_callable, write_transaction
from slimyq.payloads.database import (
    CreateConversation,
    DeleteConversation,
    GetConversations,
    GetMessages,
    SaveMessage,
    UpdateConversation,
)


def _owned(conversation_id: str, user_id: str) -> Conversation:
    conv: Conversation | None = Conversation.get_or_none(
        (Conversation.id == conversation_id) & (Conversation.user_id == user_id)
    )
    if conv is None:
        raise AccessDenied()
    return conv


@rq_callable
def create_conversation(p: CreateConversation, ctx: JobContext) -> dict[str, Any]:
    conv_id = ctx.derived_id("conversation")
    now = utcnow()
    with write_transaction(ctx.db):
        Conversation.insert(
            id=conv_id,
            user_id=p.user_id,
            title=p.title,
            personality_mode=p.personality_mode,
            created_at=now,
            updated_at=now,
        ).on_conflict_ignore().execute()
        row = Conversation.get_by_id(conv_id)
    return {"success": True, "conversationId": conv_id, "createdAt": iso(row.created_at)}


@rq_callable
def save_message(p: SaveMessage, ctx: JobContext) -> dict[str, Any]:
    msg_id = ctx.derived_id("message")
    conversation_id = str(p.conversation_id)
    with write_transaction(ctx.db):
        _owned(conversation_id, p.user_id)
        existing: Message | None = Message.get_or_none(Message.id == msg_id)
        if existing is None:
            now = utcnow()
            Message.insert(
                id=msg_id,
                conversation=conversation_id,
                user_id=p.user_id,
                role=p.role,
                content=p.content,
                personality_mode=p.personality_mode,
                created_at=now,
            ).on_conflict_ignore().execute()
            Conversation.update(updated_at=now).where(Conversation.id == conversation_id).execute()
            saved_at = now
        else:
            saved_at = existing.created_at
    return {"success": True, "savedAt": iso(saved_at)}


@rq_callable
def update_conversation(p: UpdateConversation, ctx: JobContext) -> dict[str, Any]:
    conversation_id = str(p.conversation_id)
    with write_transaction(ctx.db):
        conv = _owned(conversation_id, p.user_id)
        if conv.title == p.title:  # a rerun: the first run already applied it
            return {"success": True, "updatedAt": iso(conv.updated_at)}
        now = utcnow()
        Conversation.update(title=p.title, updated_at=now).where(Conversation.id == conversation_id).execute()
    return {"success": True, "updatedAt": iso(now)}


@rq_callable
def delete_conversation(p: DeleteConversation, ctx: JobContext) -> dict[str, Any]:
    """Delete a conversation (messages cascade) and leave an audit entry in the same transaction.

    The audit entry's id derives from the job id: it is the record that this job already deleted
    the conversation, so a rerun after the commit returns the first result instead of failing
    with "not found".
    """
    conversation_id = str(p.conversation_id)
    tombstone_id = ctx.derived_id("delete")
    with write_transaction(ctx.db):
        done: AuditLog | None = AuditLog.get_or_none(AuditLog.id == tombstone_id)
        if done is not None:
            return {"success": True, "deletedAt": iso(done.timestamp)}
        _owned(conversation_id, p.user_id)
        # Messages go by ON DELETE CASCADE; deleting them first too keeps MySQL/SQLite setups
        # without enforced foreign keys consistent.
        Message.delete().where(Message.conversation == conversation_id).execute()
        Conversation.delete().where(Conversation.id == conversation_id).execute()
        now = utcnow()
        AuditLog.insert(
            id=tombstone_id, user_id=p.user_id, action="conversation_deleted", resource_type="conversation",
            resource_id=conversation_id, details={"jobId": ctx.job_id}, timestamp=now, success=True,
        ).on_conflict_ignore().execute()
    return {"success": True, "deletedAt": iso(now)}


@rq_callable
def get_conversations(p: GetConversations, ctx: JobContext) -> list[dict[str, Any]]:
    ctx.db  # noqa: B018 - opens the connection for this thread
    convs = list(
        Conversation.select()
        .where(Conversation.user_id == p.user_id)
        .order_by(Conversation.updated_at.desc(), Conversation.id)
        .limit(p.limit)
    )
    counts: dict[str, int] = {}
    if convs:
        query = (
            Message.select(Message.conversation, peewee.fn.COUNT(Message.id).alias("n"))
            .where(Message.conversation.in_([c.id for c in convs]))
            .group_by(Message.conversation)
            .tuples()
        )
        counts = {str(row[0]): int(row[1]) for row in query}  # type: ignore[index]
    return [
        {
            "id": c.id,
            "title": c.title,
            "personalityMode": c.personality_mode,
            "createdAt": iso(c.created_at),
            "updatedAt": iso(c.updated_at),
            "messageCount": counts.get(c.id, 0),
        }
        for c in convs
    ]


@rq_callable
def get_messages(p: GetMessages, ctx: JobContext) -> list[dict[str, Any]]:
    conversation_id = str(p.conversation_id)
    with write_transaction(ctx.db):
        _owned(conversation_id, p.user_id)
        rows = list(
            Message.select()
            .where(Message.conversation == conversation_id)
            .order_by(Message.created_at, Message.id)
            .limit(p.limit)
        )
    return [
        {
            "id": m.id,
            "role": m.role,
            "content": m.content,
            "personalityMode": m.personality_mode,
            "createdAt": iso(m.created_at),
        }
        for m in rows
    ]
