"""Batched cleanup on SQLite, PostgreSQL and MariaDB: boundaries, exclusions, dry run, the lock,
interruption and database errors."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import peewee
import pytest

from slimyq.audit import cleanup as cleanup_mod
from slimyq.audit.cleanup import BUSY_MESSAGE, CleanupFailed, cleanup, preview
from slimyq.audit.lock import cleanup_lock
from slimyq.db import AuditLog

CUT = dt.datetime(2024, 6, 1, 12, 0, 0)
UTC_CUT = CUT.replace(tzinfo=dt.UTC)


def _bulk(n: int, start: dt.datetime, action: str = "login", step: dt.timedelta = dt.timedelta(seconds=1)) -> None:
    rows = [
        {
            "id": str(uuid.uuid4()),
            "timestamp": start + i * step,
            "action": action,
            "user_id": f"u{i % 3}",
            "resource_type": "session",
            "resource_id": str(i),
            "success": True,
        }
        for i in range(n)
    ]
    for i in range(0, n, 500):
        AuditLog.insert_many(rows[i : i + 500]).execute()


def _count() -> int:
    return int(AuditLog.select().count())


def test_strictly_older_than_the_cut_off_is_deleted(db, add):
    before = add(CUT - dt.timedelta(microseconds=1))
    at = add(CUT)
    after = add(CUT + dt.timedelta(microseconds=1))

    result = cleanup(db, UTC_CUT)

    assert result.deleted == 1 and not result.skipped
    remaining = {r.id for r in AuditLog.select(AuditLog.id)}
    assert remaining == {at, after}
    assert before not in remaining
    assert result.line() == "deleted 1 audit entry older than 2024-06-01T12:00:00Z"


def test_aware_cut_off_in_another_zone_means_the_same_instant(db, add):
    add(CUT - dt.timedelta(seconds=1))
    add(CUT)
    plus2 = dt.datetime(2024, 6, 1, 14, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert cleanup(db, plus2).deleted == 1
    assert _count() == 1


def test_excluded_actions_are_kept(db, add):
    old = CUT - dt.timedelta(days=30)
    add(old, action="login")
    kept1 = add(old, action="security_alert")
    kept2 = add(old, action="gdpr_consent")
    add(old, action="logout")

    result = cleanup(db, UTC_CUT, ["security_alert", "gdpr_consent", "security_alert"])

    assert result.deleted == 2
    assert {r.id for r in AuditLog.select(AuditLog.id)} == {kept1, kept2}
    assert result.excluded_actions == ["security_alert", "gdpr_consent"]
    assert result.line().endswith("kept actions security_alert, gdpr_consent")


def test_empty_table(db):
    result = cleanup(db, UTC_CUT)
    assert (result.deleted, result.batches, result.skipped) == (0, 0, False)
    plan = preview(db, UTC_CUT)
    assert (plan.would_delete, plan.oldest, plan.newest) == (0, None, None)
    assert plan.line() == "would delete 0 audit entries older than 2024-06-01T12:00:00Z"


def test_many_batches_delete_everything_that_matches(db):
    _bulk(1050, CUT - dt.timedelta(days=10))  # all older
    _bulk(30, CUT, step=dt.timedelta(minutes=1))  # at or after the cut-off
    _bulk(40, CUT - dt.timedelta(days=5), action="keep_me")
    seen: list[int] = []

    result = cleanup(db, UTC_CUT, ["keep_me"], batch_size=100, on_batch=seen.append)

    assert result.deleted == 1050
    assert result.batches == 11
    assert sum(seen) == 1050 and max(seen) == 100
    assert _count() == 70


def test_same_timestamp_for_more_rows_than_a_batch(db):
    _bulk(250, CUT - dt.timedelta(days=1), step=dt.timedelta(0))
    assert cleanup(db, UTC_CUT, batch_size=100).deleted == 250
    assert _count() == 0


def test_dry_run_deletes_nothing_and_reports_range(db, add):
    oldest = CUT - dt.timedelta(days=90, microseconds=-123)
    newest = CUT - dt.timedelta(seconds=1)
    add(oldest)
    add(newest)
    add(CUT - dt.timedelta(days=1), action="keep")
    add(CUT)

    plan = preview(db, UTC_CUT, ["keep"])

    assert plan.would_delete == 2
    assert plan.oldest == oldest.replace(tzinfo=dt.UTC)
    assert plan.newest == newest.replace(tzinfo=dt.UTC)
    assert _count() == 4
    assert plan.line() == (
        "would delete 2 audit entries older than 2024-06-01T12:00:00Z "
        "(oldest 2024-03-03T12:00:00.000123Z, newest 2024-06-01T11:59:59Z), kept actions keep"
    )


def test_second_cleanup_skips_while_the_first_holds_the_lock(db):
    _bulk(500, CUT - dt.timedelta(days=2))
    holding, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first_batch_pauses(n: int) -> None:
        holding.set()
        release.wait(10)

    def first() -> None:
        try:
            results["a"] = cleanup(db, UTC_CUT, batch_size=100, on_batch=first_batch_pauses)
        finally:
            db.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert holding.wait(10)
        second = cleanup(db, UTC_CUT, batch_size=100)  # another connection: this thread's own
        assert second.skipped and second.deleted == 0
        assert second.line() == BUSY_MESSAGE
        assert _count() == 400  # only the first's first batch is gone
    finally:
        release.set()
        thread.join(20)
    a = results["a"]
    assert isinstance(a, cleanup_mod.CleanupResult)
    assert a.deleted == 500 and _count() == 0


def test_second_cleanup_with_wait_runs_after_the_first(db):
    _bulk(300, CUT - dt.timedelta(days=2))
    holding, release = threading.Event(), threading.Event()
    results: dict[str, cleanup_mod.CleanupResult] = {}

    def pause_once(n: int) -> None:
        if not holding.is_set():
            holding.set()
            release.wait(10)

    def run(name: str, **kw: object) -> None:
        try:
            results[name] = cleanup(db, UTC_CUT, batch_size=100, **kw)  # type: ignore[arg-type]
        finally:
            db.close()

    a = threading.Thread(target=run, args=("a",), kwargs={"on_batch": pause_once})
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=run, args=("b",), kwargs={"wait": 20.0})
    b.start()
    release.set()
    a.join(20)
    b.join(20)
    assert not results["a"].skipped and not results["b"].skipped
    assert results["a"].deleted + results["b"].deleted == 300
    assert _count() == 0


def test_lock_is_held_by_one_holder_at_a_time(db):
    with cleanup_lock(db) as first:
        assert first
        got: list[bool] = []

        def other() -> None:
            try:
                with cleanup_lock(db) as second:
                    got.append(second)
            finally:
                db.close()

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert got == [False]
    with cleanup_lock(db) as again:
        assert again


def test_interrupted_cleanup_leaves_committed_batches_and_the_next_run_finishes(db):
    _bulk(350, CUT - dt.timedelta(days=3))

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cleanup(db, UTC_CUT, batch_size=100, on_batch=interrupt)
    assert _count() == 250  # one batch committed, nothing half-done

    result = cleanup(db, UTC_CUT, batch_size=100)  # the lock was released
    assert result.deleted == 250 and not result.skipped
    assert _count() == 0


def test_database_error_reports_what_was_deleted(db, monkeypatch):
    _bulk(250, CUT - dt.timedelta(days=3))
    real_batch = cleanup_mod._one_batch
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise peewee.OperationalError("disk I/O error")
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(cleanup_mod, "_one_batch", failing)
    with pytest.raises(CleanupFailed) as info:
        cleanup(db, UTC_CUT, batch_size=100)
    assert info.value.deleted == 200
    assert info.value.exit_code == 1
    assert "after deleting 200 entries (disk I/O error)" in str(info.value)
    assert "run the cleanup again" in str(info.value)
    assert _count() == 50


def test_bad_batch_size(db):
    with pytest.raises(ValueError):
        cleanup(db, UTC_CUT, batch_size=0)
