"""Handlers of the ``database`` queue: conversations and messages.

Effect-once: every handler that writes records its result under its job id in ``job_effects``
(:func:`slimyq.jobs.effects.once`), in the same transaction as the write, and a rerun (retry after
the commit, redelivery after a crash) returns that first result and writes nothing: an older
rename redelivered after a newer one does not put the old title back, a create redelivered after
the conversation was deleted does not bring it back. Row ids are still derived from the job id.

peewee and the models are imported inside the handlers: enqueueing imports this module for its
job type declarations, and must not import peewee.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimyq.jobs.base import AccessDenied, JobContext, iso, write_transaction
from slimyq.jobs.registry import job_type
from slimyq.payloads.database import (
    CreateConversation,
    DeleteConversation,
    GetConversations,
    GetMessages,
    SaveMessage,
    UpdateConversation,
)

if TYPE_CHECKING:
    from slimyq.db.models import Conversation


def _owned(conversation_id: str, user_id: str) -> Conversation:
    from slimyq.db.models import Conversation

    conv: Conversation | None = Conversation.get_or_none(
        (Conversation.id == conversation_id) & (Conversation.user_id == user_id)
    )
    if conv is None:
        raise AccessDenied()
    return conv


@job_type("create_conversation", queue="database", payload=CreateConversation, batchable=True,
          help="Create a conversation for a user.")
def create_conversation(p: CreateConversation, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import Conversation, utcnow
    from slimyq.db.statements import insert_ignore
    from slimyq.jobs.effects import once

    conv_id = ctx.derived_id("conversation")

    def apply() -> dict[str, Any]:
        now = utcnow()
        inserted = insert_ignore(Conversation, id=conv_id, user_id=p.user_id, title=p.title,
                                 personality_mode=p.personality_mode, created_at=now, updated_at=now)
        # The row as written: ours, or (a run from before job_effects) the one already there.
        created = now if inserted else Conversation.get_by_id(conv_id).created_at
        return {"success": True, "conversationId": conv_id, "createdAt": iso(created)}

    return once(ctx, "create_conversation", apply)


@job_type("save_message", queue="database", payload=SaveMessage, batchable=True,
          help="Save a message in a conversation (bumps its updated_at).")
def save_message(p: SaveMessage, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import Conversation, Message, utcnow
    from slimyq.db.statements import insert_ignore
    from slimyq.jobs.effects import once

    conversation_id = str(p.conversation_id)

    def apply() -> dict[str, Any]:
        _owned(conversation_id, p.user_id)
        now = utcnow()
        insert_ignore(Message, id=ctx.derived_id("message"), conversation=conversation_id, user_id=p.user_id,
                      role=p.role, content=p.content, personality_mode=p.personality_mode, created_at=now)
        Conversation.update(updated_at=now).where(Conversation.id == conversation_id).execute()
        return {"success": True, "savedAt": iso(now)}

    return once(ctx, "save_message", apply)


@job_type("update_conversation", queue="database", payload=UpdateConversation, batchable=True,
          help="Rename a conversation.")
def update_conversation(p: UpdateConversation, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import Conversation, utcnow
    from slimyq.jobs.effects import once

    conversation_id = str(p.conversation_id)

    def apply() -> dict[str, Any]:
        _owned(conversation_id, p.user_id)
        now = utcnow()
        Conversation.update(title=p.title, updated_at=now).where(Conversation.id == conversation_id).execute()
        return {"success": True, "updatedAt": iso(now)}

    return once(ctx, "update_conversation", apply)


@job_type("delete_conversation", queue="database", payload=DeleteConversation, batchable=True,
          help="Delete a conversation and its messages.")
def delete_conversation(p: DeleteConversation, ctx: JobContext) -> dict[str, Any]:
    """Delete a conversation (messages cascade) and leave a ``conversation_deleted`` audit entry,
    in one transaction. A rerun returns the first result: its marker is in ``job_effects``, not
    the audit entry (which ``audit cleanup`` may have deleted since)."""
    from slimyq.db.models import AuditLog, Conversation, Message, utcnow
    from slimyq.jobs.effects import once

    conversation_id = str(p.conversation_id)

    def apply() -> dict[str, Any]:
        _owned(conversation_id, p.user_id)
        # Messages go by ON DELETE CASCADE; deleting them first too keeps MySQL/SQLite setups
        # without enforced foreign keys consistent.
        Message.delete().where(Message.conversation == conversation_id).execute()
        Conversation.delete().where(Conversation.id == conversation_id).execute()
        now = utcnow()
        AuditLog.insert(
            id=ctx.derived_id("delete"), user_id=p.user_id, action="conversation_deleted",
            resource_type="conversation", resource_id=conversation_id, details={"jobId": ctx.job_id},
            timestamp=now, success=True,
        ).on_conflict_ignore().execute()
        return {"success": True, "deletedAt": iso(now)}

    return once(ctx, "delete_conversation", apply)


@job_type("get_conversations", queue="database", payload=GetConversations, batchable=True,
          help="List a user's conversations, newest first, with message counts.")
def get_conversations(p: GetConversations, ctx: JobContext) -> list[dict[str, Any]]:
    import peewee

    from slimyq.db.models import Conversation, Message

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


@job_type("get_messages", queue="database", payload=GetMessages, batchable=True,
          help="List a conversation's messages, oldest first.")
def get_messages(p: GetMessages, ctx: JobContext) -> list[dict[str, Any]]:
    from slimyq.db.models import Message

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
