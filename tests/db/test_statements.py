"""insert_ignore(): the SQL peewee builds, kept and reused, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimyq.db import statements
from slimyq.db.models import Conversation, Message, utcnow
from slimyq.db.statements import insert_ignore


def _sent(db: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    seen: list[tuple[str, list[Any]]] = []
    real = db.execute_sql

    def execute_sql(sql: str, params: Any = None) -> Any:
        seen.append((sql, list(params or [])))
        return real(sql, params)

    monkeypatch.setitem(vars(db), "execute_sql", execute_sql)
    return seen


def _conversation(conv_id: str, title: str, when: dt.datetime) -> dict[str, Any]:
    return {"id": conv_id, "user_id": "u1", "title": title, "personality_mode": "helpful", "created_at": when,
            "updated_at": when}


def test_it_sends_what_peewee_would_and_inserts_once(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    statements._SQL.clear()
    sent = _sent(db, monkeypatch)
    now = utcnow()
    assert insert_ignore(Conversation, **_conversation("c1", "first", now)) == 1  # built by peewee
    assert insert_ignore(Conversation, **_conversation("c2", "second", now)) == 1  # the kept SQL
    assert insert_ignore(Conversation, **_conversation("c1", "again", now)) == 0  # its key is there
    assert sent[1][0] == sent[0][0]  # the statement peewee itself sent (no RETURNING on PostgreSQL)
    assert "RETURNING" not in sent[1][0].upper()
    assert sent[1][1] == ["c2", "u1", "second", "helpful", now, now]
    assert sorted((c.id, c.title) for c in Conversation.select()) == [("c1", "first"), ("c2", "second")]
    assert statements._SQL[(type(db), Conversation, tuple(_conversation("x", "", now)))] is not None


def test_a_foreign_key_is_given_by_its_field_name(db: Any) -> None:
    now = utcnow()
    insert_ignore(Conversation, **_conversation("c1", "t", now))
    for message_id in ("m1", "m2"):
        insert_ignore(Message, id=message_id, conversation="c1", user_id="u1", role="user", content="hi",
                      personality_mode="helpful", created_at=now)
    assert [m.conversation_id for m in Message.select().order_by(Message.id)] == ["c1", "c1"]


def test_a_statement_peewee_adds_a_default_to_keeps_peewees_path(db: Any) -> None:
    """Without ``created_at`` peewee adds the field's default (a new time per row): nothing to keep."""
    from slimyq.db.models import JobEffect

    for job_id in ("j1", "j2"):
        assert insert_ignore(JobEffect, job_id=job_id, effect="e", result={"n": 1}) == 1
    assert statements._SQL[(type(db), JobEffect, ("job_id", "effect", "result"))] is None
    assert JobEffect.select().count() == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
                          st.sampled_from(["helpful", "concise"])), min_size=1, max_size=4))
def test_any_values_round_trip(db: Any, rows: list[tuple[str, str]]) -> None:
    Conversation.delete().execute()
    when = utcnow().replace(microsecond=123456)
    for i, (title, mode) in enumerate(rows):
        insert_ignore(Conversation, id=f"h{i}", user_id="u", title=title, personality_mode=mode, created_at=when,
                      updated_at=when)
    got = [(c.title, c.personality_mode, c.created_at) for c in Conversation.select().order_by(Conversation.id)]
    if isinstance(db, peewee.MySQLDatabase):  # MariaDB's collation compares, not stores, case-insensitively
        assert [g[0] for g in got] == [t for t, _ in rows]
    assert got == [(title, mode, when) for title, mode in rows]
