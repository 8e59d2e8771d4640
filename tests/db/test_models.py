"""The models on SQLite, PostgreSQL and MariaDB: round trips, microseconds, JSON, cascades."""

from __future__ import annotations

import datetime as dt
import uuid

import peewee
import pytest

from slimyq.db import (
    MODELS,
    AuditLog,
    Conversation,
    Message,
    table_names,
    utcnow,
)


def _id() -> str:
    return str(uuid.uuid4())


def _conversation(user: str = "u1", **fields: object) -> Conversation:
    return Conversation.create(id=_id(), user_id=user, **fields)


def test_conversation_round_trip_keeps_microseconds(db):
    created = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
    updated = dt.datetime(2024, 5, 6, 7, 8, 9, 999999)
    conv = _conversation(
        title="Hello ✓", personality_mode="sarcastic", created_at=created, updated_at=updated
    )

    row = Conversation.get_by_id(conv.id)
    assert row.user_id == "u1"
    assert row.title == "Hello ✓"
    assert row.personality_mode == "sarcastic"
    assert row.created_at == created
    assert row.updated_at == updated
    assert row.created_at.tzinfo is None


def test_conversation_defaults(db):
    before = utcnow()
    conv = _conversation(title=None)
    row = Conversation.get_by_id(conv.id)
    assert row.title is None
    assert row.personality_mode == "helpful"
    assert before <= row.created_at <= utcnow()
    assert row.created_at.tzinfo is None


def test_messages_order_by_microsecond(db):
    conv = _conversation()
    base = dt.datetime(2024, 1, 1, 12, 0, 0, 0)
    stamps = [base + dt.timedelta(microseconds=n) for n in (3, 1, 2, 0)]
    for n, stamp in enumerate(stamps):
        Message.create(
            id=_id(), conversation=conv, user_id="u1", role="user", content=f"m{n}", created_at=stamp
        )

    rows = list(Message.select().where(Message.conversation == conv.id).order_by(Message.created_at))
    assert [r.created_at for r in rows] == sorted(stamps)
    assert [r.content for r in rows] == ["m3", "m1", "m2", "m0"]
    assert rows[0].created_at == base  # a zero microsecond part reads back too


def test_aware_datetimes_are_stored_as_naive_utc(db):
    aware = dt.datetime(2024, 3, 1, 10, 30, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    conv = _conversation(created_at=aware, updated_at=aware)
    row = Conversation.get_by_id(conv.id)
    assert row.created_at == dt.datetime(2024, 3, 1, 8, 30, 0, 250000)
    assert Conversation.select().where(Conversation.updated_at == aware).count() == 1


def test_audit_log_round_trip_with_json_details(db):
    details = {"prompt": "héllo 🐌", "nested": {"list": [1, 2.5, None, True]}, "quote": "'\""}
    stamp = dt.datetime(2023, 12, 31, 23, 59, 59, 654321)
    AuditLog.create(
        id="a1",
        user_id="u1",
        action="chat_bot_interaction",
        resource_type="chat",
        resource_id="global",
        details=details,
        ip_address="2001:db8::1",
        user_agent="curl/8",
        session_id="s",
        request_id="r",
        timestamp=stamp,
        success=False,
        error_message="boom",
    )
    AuditLog.create(id="a2", action="x", resource_type="t", resource_id="1")

    row = AuditLog.get_by_id("a1")
    assert row.details == details
    assert row.timestamp == stamp
    assert row.success is False
    assert row.error_message == "boom"
    assert row.ip_address == "2001:db8::1"

    bare = AuditLog.get_by_id("a2")
    assert bare.details is None
    assert bare.user_id is None
    assert bare.success is True
    assert bare.timestamp.tzinfo is None


def test_json_details_accept_lists_and_scalars(db):
    for n, value in enumerate([[1, "two"], "text", 3, {}]):
        AuditLog.create(id=f"j{n}", action="a", resource_type="t", resource_id="r", details=value)
        assert AuditLog.get_by_id(f"j{n}").details == value


def test_deleting_a_conversation_cascades_to_its_messages(db):
    doomed, kept = _conversation(), _conversation()
    for conv in (doomed, kept):
        for n in range(3):
            Message.create(id=_id(), conversation=conv, user_id="u1", role="user", content=str(n))

    # A plain DELETE (no peewee-side recursion): the database itself must cascade.
    Conversation.delete().where(Conversation.id == doomed.id).execute()

    assert Message.select().where(Message.conversation == doomed.id).count() == 0
    assert Message.select().where(Message.conversation == kept.id).count() == 3


def test_message_needs_an_existing_conversation(db):
    with pytest.raises(peewee.IntegrityError), db.atomic():
        Message.create(id=_id(), conversation="no-such-conversation", user_id="u", role="user", content="x")


def test_insert_on_conflict_ignore_is_idempotent(db):
    conv_id = _id()
    for title in ("first", "second"):
        Conversation.insert(id=conv_id, user_id="u1", title=title).on_conflict_ignore().execute()
    assert Conversation.select().count() == 1
    assert Conversation.get_by_id(conv_id).title == "first"


def test_table_names_lists_every_table_children_first(db):
    names = table_names()
    assert set(names) == {m._meta.table_name for m in MODELS}
    assert names.index("chat_messages") < names.index("chat_conversations")
    assert set(names) <= set(db.get_tables())


def test_models_match_the_migrated_schema(db):
    from playhouse.schema_diff import diff_models

    diff = diff_models(db, list(MODELS))
    assert not diff, f"models and migrations disagree; add a migration:\n{diff}"


def test_utcnow_is_naive_utc():
    now = utcnow()
    assert now.tzinfo is None
    assert abs(now - dt.datetime.now(dt.UTC).replace(tzinfo=None)) < dt.timedelta(seconds=5)
