"""The `database` queue's handlers on SQLite, PostgreSQL and MariaDB: result shapes (DESIGN §5),
ownership, cascades, message counts and effect-once reruns."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import peewee
import pytest

from slimyq.config import load_settings
from slimyq.db import Conversation, Message
from slimyq.jobs import database as handlers
from slimyq.jobs.base import AccessDenied, JobContext, PermanentError, iso
from slimyq.payloads.database import (
    CreateConversation,
    DeleteConversation,
    GetConversations,
    GetMessages,
    SaveMessage,
    UpdateConversation,
)

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DENIED = "Conversation not found or access denied"


@pytest.fixture(params=[True, False], ids=["apply-first", "look-first"])
def run(db: peewee.Database, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``run(handler, payload, job_id=None)``: call a handler as the worker would. Both orders of
    effect-once (``ctx.rerunnable``: the worker's, for these batchable types; and looking the marker
    up first, as for a type that is not) must give the same results."""
    settings = load_settings().settings

    def call(handler: Callable[[Any, JobContext], Any], payload: Any, job_id: str | None = None) -> Any:
        ctx = JobContext(
            job_id=job_id or uuid.uuid4().hex, queue="database", attempt=1, settings=settings, db_factory=lambda: db,
            rerunnable=request.param,
        )
        return handler(payload, ctx)

    return call


def create(run: Callable[..., Any], user: str = "u1", title: str | None = "Chat", **kw: Any) -> str:
    result = run(handlers.create_conversation, CreateConversation(user_id=user, title=title, **kw))
    conversation_id: str = result["conversationId"]
    return conversation_id


def save(
    run: Callable[..., Any], conv: str, content: str = "hi", user: str = "u1", role: str = "user", **kw: Any
) -> dict[str, Any]:
    payload = SaveMessage(conversation_id=uuid.UUID(conv), user_id=user, role=role, content=content, **kw)
    result: dict[str, Any] = run(handlers.save_message, payload)
    return result


# ------------------------------------------------------------------ shapes


def test_create_conversation_shape_and_row(run):
    result = run(handlers.create_conversation, CreateConversation(user_id="u1", title="Hello"))
    assert set(result) == {"success", "conversationId", "createdAt"}
    assert result["success"] is True
    assert uuid.UUID(result["conversationId"])
    assert ISO_Z.match(result["createdAt"])
    row = Conversation.get_by_id(result["conversationId"])
    assert (row.user_id, row.title, row.personality_mode) == ("u1", "Hello", "helpful")


def test_create_conversation_keeps_personality_and_allows_no_title(run):
    conv = create(run, title=None, personality_mode="sarcastic")
    row = Conversation.get_by_id(conv)
    assert row.title is None
    assert row.personality_mode == "sarcastic"


def test_save_message_shape_and_bumps_updated_at(run):
    conv = create(run)
    before = Conversation.get_by_id(conv).updated_at
    result = save(run, conv, "hello there", role="assistant", personality_mode="casual")
    assert set(result) == {"success", "savedAt"}
    assert result["success"] is True
    assert ISO_Z.match(result["savedAt"])
    after = Conversation.get_by_id(conv).updated_at
    assert after > before
    assert iso(after) == result["savedAt"]
    msg = Message.get(Message.conversation == conv)
    assert (msg.role, msg.content, msg.personality_mode, msg.user_id) == ("assistant", "hello there", "casual", "u1")


def test_update_conversation_shape(run):
    conv = create(run)
    result = run(handlers.update_conversation, UpdateConversation(conversation_id=conv, user_id="u1", title="New"))
    assert set(result) == {"success", "updatedAt"}
    assert result["success"] is True and ISO_Z.match(result["updatedAt"])
    row = Conversation.get_by_id(conv)
    assert row.title == "New"
    assert iso(row.updated_at) == result["updatedAt"]


def test_delete_conversation_shape_and_cascade(run):
    conv, other = create(run), create(run)
    for i in range(3):
        save(run, conv, f"m{i}")
    save(run, other, "keep me")
    result = run(handlers.delete_conversation, DeleteConversation(conversation_id=conv, user_id="u1"))
    assert set(result) == {"success", "deletedAt"}
    assert result["success"] is True and ISO_Z.match(result["deletedAt"])
    assert Conversation.get_or_none(Conversation.id == conv) is None
    assert Message.select().where(Message.conversation == conv).count() == 0
    assert [m.content for m in Message.select().where(Message.conversation == other)] == ["keep me"]


def test_database_cascade_removes_messages_when_the_row_goes(run, db):
    conv = create(run)
    save(run, conv, "x")
    Conversation.delete().where(Conversation.id == conv).execute()
    assert Message.select().where(Message.conversation == conv).count() == 0


# ------------------------------------------------------------------ listings


def test_get_conversations_newest_first_with_counts_0_1_150(run):
    empty = create(run, title="empty")
    one = create(run, title="one")
    many = create(run, title="many")
    create(run, user="someone-else", title="not mine")
    for i in range(150):
        save(run, many, f"m{i}")
    save(run, one, "only")  # now `one` is the most recently updated
    result = run(handlers.get_conversations, GetConversations(user_id="u1"))
    assert [c["title"] for c in result] == ["one", "many", "empty"]
    assert [c["messageCount"] for c in result] == [1, 150, 0]
    assert [c["id"] for c in result] == [one, many, empty]
    for conv in result:
        assert set(conv) == {"id", "title", "personalityMode", "createdAt", "updatedAt", "messageCount"}
        assert conv["personalityMode"] == "helpful"
        assert ISO_Z.match(conv["createdAt"]) and ISO_Z.match(conv["updatedAt"])
    updated = [c["updatedAt"] for c in result]
    assert updated == sorted(updated, reverse=True)


def test_get_conversations_limit_and_other_users(run):
    for i in range(5):
        create(run, title=f"c{i}")
    assert len(run(handlers.get_conversations, GetConversations(user_id="u1", limit=3))) == 3
    assert len(run(handlers.get_conversations, GetConversations(user_id="u1"))) == 5
    assert run(handlers.get_conversations, GetConversations(user_id="nobody")) == []


def test_get_messages_oldest_first_with_limit(run):
    conv = create(run)
    for i in range(5):
        save(run, conv, f"m{i}", role="user" if i % 2 == 0 else "assistant")
    result = run(handlers.get_messages, GetMessages(conversation_id=conv, user_id="u1"))
    assert [m["content"] for m in result] == ["m0", "m1", "m2", "m3", "m4"]
    assert [m["role"] for m in result] == ["user", "assistant", "user", "assistant", "user"]
    for msg in result:
        assert set(msg) == {"id", "role", "content", "personalityMode", "createdAt"}
        assert ISO_Z.match(msg["createdAt"])
    limited = run(handlers.get_messages, GetMessages(conversation_id=conv, user_id="u1", limit=2))
    assert [m["content"] for m in limited] == ["m0", "m1"]


# ------------------------------------------------------------------ ownership


@pytest.mark.parametrize("action", ["save", "update", "delete", "get_messages"])
@pytest.mark.parametrize("whose", ["other user", "missing"])
def test_ownership_failures_are_permanent_access_denied(run, action, whose):
    conv = create(run, user="owner")
    target = conv if whose == "other user" else str(uuid.uuid4())
    calls = {
        "save": (handlers.save_message, SaveMessage(conversation_id=target, user_id="u1", role="user", content="x")),
        "update": (handlers.update_conversation, UpdateConversation(conversation_id=target, user_id="u1", title="t")),
        "delete": (handlers.delete_conversation, DeleteConversation(conversation_id=target, user_id="u1")),
        "get_messages": (handlers.get_messages, GetMessages(conversation_id=target, user_id="u1")),
    }
    handler, payload = calls[action]
    with pytest.raises(AccessDenied) as info:
        run(handler, payload)
    assert str(info.value) == DENIED
    assert isinstance(info.value, PermanentError)
    row = Conversation.get_by_id(conv)
    assert row.title == "Chat"  # nothing changed
    assert Message.select().count() == 0


# ------------------------------------------------------------------ effect-once


def test_create_conversation_twice_same_job_one_row_same_result(run):
    payload = CreateConversation(user_id="u1", title="Once")
    first = run(handlers.create_conversation, payload, job_id="job-1")
    second = run(handlers.create_conversation, payload, job_id="job-1")
    assert first == second
    assert Conversation.select().where(Conversation.user_id == "u1").count() == 1
    assert run(handlers.create_conversation, payload, job_id="job-2") != first


def test_save_message_twice_same_job_one_row_same_result(run):
    conv = create(run)
    payload = SaveMessage(conversation_id=conv, user_id="u1", role="user", content="once")
    first = run(handlers.save_message, payload, job_id="msg-1")
    updated = Conversation.get_by_id(conv).updated_at
    second = run(handlers.save_message, payload, job_id="msg-1")
    assert first == second
    assert Message.select().where(Message.conversation == conv).count() == 1
    assert Conversation.get_by_id(conv).updated_at == updated


def test_update_conversation_twice_same_job_same_result(run):
    conv = create(run)
    payload = UpdateConversation(conversation_id=conv, user_id="u1", title="Renamed")
    first = run(handlers.update_conversation, payload, job_id="upd-1")
    second = run(handlers.update_conversation, payload, job_id="upd-1")
    assert first == second
    assert Conversation.get_by_id(conv).title == "Renamed"


def test_delete_conversation_twice_same_job_same_result(run):
    conv = create(run)
    payload = DeleteConversation(conversation_id=conv, user_id="u1")
    first = run(handlers.delete_conversation, payload, job_id="del-1")
    second = run(handlers.delete_conversation, payload, job_id="del-1")
    assert first == second


def test_an_older_rename_redelivered_after_a_newer_one_changes_nothing(run):
    conv = create(run)
    older = run(handlers.update_conversation, UpdateConversation(conversation_id=conv, user_id="u1", title="Old"),
                job_id="rename-old")
    run(handlers.update_conversation, UpdateConversation(conversation_id=conv, user_id="u1", title="New"),
        job_id="rename-new")
    again = run(handlers.update_conversation, UpdateConversation(conversation_id=conv, user_id="u1", title="Old"),
                job_id="rename-old")
    assert again == older
    assert Conversation.get_by_id(conv).title == "New"


def test_a_delete_rerun_after_audit_cleanup_returns_the_first_result(run, db):
    from slimyq.audit.cleanup import cleanup
    from slimyq.db import AuditLog, utcnow

    conv = create(run)
    payload = DeleteConversation(conversation_id=conv, user_id="u1")
    first = run(handlers.delete_conversation, payload, job_id="del-2")
    assert AuditLog.select().where(AuditLog.action == "conversation_deleted").count() == 1
    cleanup(db, utcnow() + dt.timedelta(days=1), [])
    assert AuditLog.select().count() == 0
    assert run(handlers.delete_conversation, payload, job_id="del-2") == first


def test_a_create_rerun_after_the_conversation_was_deleted_does_not_bring_it_back(run):
    payload = CreateConversation(user_id="u1", title="Gone")
    first = run(handlers.create_conversation, payload, job_id="create-3")
    run(handlers.delete_conversation, DeleteConversation(conversation_id=first["conversationId"], user_id="u1"))
    assert run(handlers.create_conversation, payload, job_id="create-3") == first
    assert Conversation.select().count() == 0


def test_a_failed_run_leaves_no_marker_so_its_retry_really_runs(run):
    from slimyq.jobs.effects import applied

    conv = create(run, user="owner")
    payload = SaveMessage(conversation_id=conv, user_id="u1", role="user", content="x")
    with pytest.raises(AccessDenied):
        run(handlers.save_message, payload, job_id="denied-1")
    assert applied("denied-1", "save_message") is None
    mine = SaveMessage(conversation_id=conv, user_id="owner", role="user", content="x")
    result = run(handlers.save_message, mine, job_id="denied-1")
    assert applied("denied-1", "save_message") == result
    assert Message.select().count() == 1


def test_create_conversation_rerun_without_marker_reports_the_rows_created_at(run):
    """A job that ran before job_effects (no marker) and is redelivered: the row stays as it was
    written and the result reports that row's created_at, not the rerun's clock."""
    from slimyq.db.models import JobEffect

    payload = CreateConversation(user_id="u1", title="Old")
    first = run(handlers.create_conversation, payload, job_id="job-old")
    JobEffect.delete().where(JobEffect.job_id == "job-old").execute()
    conv = Conversation.get_by_id(first["conversationId"])
    old = dt.datetime(2020, 1, 2, 3, 4, 5, 678000)
    Conversation.update(created_at=old).where(Conversation.id == conv.id).execute()
    again = run(handlers.create_conversation, payload, job_id="job-old")
    assert again["createdAt"] == iso(old)
