"""Effect-once (``once()``) in both orders, on SQLite, PostgreSQL and MariaDB: a rerun returns the
first result whatever made it fail, and a failure that says nothing about the data surfaces."""

from __future__ import annotations

from typing import Any

import peewee
import pytest

from slimyq.config import Settings
from slimyq.db.models import Conversation, utcnow
from slimyq.jobs import database as handlers
from slimyq.jobs.base import AccessDenied, JobContext
from slimyq.jobs.effects import once
from slimyq.payloads.database import CreateConversation, DeleteConversation
from slimyq.runtime.execute import JobTimeout


@pytest.fixture(params=[True, False], ids=["apply-first", "look-first"])
def rerunnable(request: pytest.FixtureRequest) -> bool:
    flag: bool = request.param
    return flag


def _ctx(db: Any, job_id: str, rerunnable: bool) -> JobContext:
    return JobContext(job_id, "database", 1, Settings(), db_factory=lambda: db, rerunnable=rerunnable)


def test_a_rerun_that_fails_on_changed_data_returns_the_first_result(db: Any, rerunnable: bool) -> None:
    """A team's handler in the README's style (read a row, change it, in ``once()``): the row is
    gone by the rerun, which must still answer with the first result, not ``DoesNotExist``."""
    now = utcnow()
    Conversation.insert(id="w1", user_id="u", title="t", personality_mode="helpful",
                        created_at=now, updated_at=now).execute()

    def handler(ctx: JobContext) -> Any:
        def apply() -> dict[str, Any]:
            row = Conversation.get_by_id("w1")
            row.title = "renamed"
            row.save()
            return {"renamed": True}

        return once(ctx, "rename_widget", apply)

    assert handler(_ctx(db, "j1", rerunnable)) == {"renamed": True}
    Conversation.delete().execute()
    assert handler(_ctx(db, "j1", rerunnable)) == {"renamed": True}
    with pytest.raises(peewee.DoesNotExist):  # another job id: a real failure
        handler(_ctx(db, "j2", rerunnable))


def _deleted(db: Any, rerunnable: bool) -> DeleteConversation:
    first = handlers.create_conversation(CreateConversation(user_id="u1", title="t0"), _ctx(db, "c1", rerunnable))
    payload = DeleteConversation(user_id="u1", conversation_id=first["conversationId"])
    handlers.delete_conversation(payload, _ctx(db, "d1", rerunnable))
    return payload


def _failing_marker_lookup(db: Any, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    real = db.execute_sql

    def execute_sql(sql: str, params: Any = None) -> Any:
        if "job_effects" in sql and sql.lstrip().upper().startswith("SELECT"):
            raise exc
        return real(sql, params)

    monkeypatch.setitem(vars(db), "execute_sql", execute_sql)


@pytest.mark.parametrize("exc", [JobTimeout("raised into the thread by the watchdog"),
                                 peewee.OperationalError("server closed the connection unexpectedly")],
                         ids=["timeout", "database-gone"])
def test_a_failed_lookup_surfaces_instead_of_a_permanent_error(
        db: Any, rerunnable: bool, exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete rerun (its conversation is gone): if the marker's lookup is cut short, the job must
    see the timeout or the database error (retried), never AccessDenied (failed for good)."""
    payload = _deleted(db, rerunnable)
    _failing_marker_lookup(db, monkeypatch, exc)
    with pytest.raises(type(exc)):
        handlers.delete_conversation(payload, _ctx(db, "d1", rerunnable))


def test_a_real_access_denied_is_still_one(db: Any, rerunnable: bool) -> None:
    payload = _deleted(db, rerunnable)
    with pytest.raises(AccessDenied):
        handlers.delete_conversation(payload, _ctx(db, "d2", rerunnable))  # never ran: no first result


def test_a_block_that_returns_nothing_is_done_once(db: Any, rerunnable: bool) -> None:
    """None is a result like any other (stored as JSON null, the column is NOT NULL): the rerun
    returns it and its block's writes happen once (applied first, they are rolled back)."""
    import uuid

    from slimyq.db.models import JobEffect

    def handler(ctx: JobContext) -> Any:
        def apply() -> None:
            now = utcnow()
            Conversation.insert(id=uuid.uuid4().hex, user_id="u-none", title="t", personality_mode="helpful",
                                created_at=now, updated_at=now).execute()

        return once(ctx, "notify", apply)

    assert handler(_ctx(db, "n1", rerunnable)) is None
    assert handler(_ctx(db, "n1", rerunnable)) is None
    assert Conversation.select().where(Conversation.user_id == "u-none").count() == 1
    assert JobEffect.get(JobEffect.job_id == "n1").result is None
