"""``list_entries``: newest first, filters, limit."""

from __future__ import annotations

import datetime as dt

from slimyq.audit.listing import list_entries

T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def test_newest_first_with_filters(db, add):
    a = add(T0, action="login", user="u1")
    b = add(T0 + dt.timedelta(minutes=1), action="logout", user="u1", resource_type="session")
    c = add(T0 + dt.timedelta(minutes=2), action="login", user="u2", success=False, error_message="bad password")
    d = add(T0 + dt.timedelta(minutes=3), action="delete", user=None, resource_type="conversation",
            details={"k": [1, 2]})

    assert [e.id for e in list_entries(db)] == [d, c, b, a]
    assert [e.id for e in list_entries(db, user="u1")] == [b, a]
    assert [e.id for e in list_entries(db, action="login")] == [c, a]
    assert [e.id for e in list_entries(db, resource_type="conversation")] == [d]
    assert [e.id for e in list_entries(db, failed=True)] == [c]
    assert [e.id for e in list_entries(db, since=(T0 + dt.timedelta(minutes=1)).replace(tzinfo=dt.UTC))] == [d, c, b]
    assert [e.id for e in list_entries(db, limit=2)] == [d, c]

    newest = list_entries(db, limit=1)[0]
    assert newest.details == {"k": [1, 2]}
    assert newest.user_id is None
    assert newest.timestamp == (T0 + dt.timedelta(minutes=3)).replace(tzinfo=dt.UTC)
    failed = list_entries(db, failed=True)[0]
    assert failed.success is False and failed.error_message == "bad password"


def test_empty(db):
    assert list_entries(db, user="nobody") == []
