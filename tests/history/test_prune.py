"""Pruning job history on SQLite, PostgreSQL and MariaDB: the strict cut-off, batches, preview."""

from __future__ import annotations

import datetime as dt

import peewee
import pytest

from slimyq.db.models import JobRun
from slimyq.history.prune import PruneFailed, preview, prune, prune_result

CUT = dt.datetime(2024, 6, 1)


def add(ended: dt.datetime | None, job_id: str) -> None:
    JobRun.insert(job_id=job_id, queue="database", job_type="canary", attempt=1, state="finished",
                  ended_at=ended).execute()


def remaining() -> list[str]:
    return sorted(r.job_id for r in JobRun.select(JobRun.job_id))


def test_prune_deletes_strictly_older_rows_only(db):
    add(CUT - dt.timedelta(days=3), "old")
    add(CUT - dt.timedelta(microseconds=1), "just-before")
    add(CUT, "at-cut")
    add(CUT + dt.timedelta(days=1), "new")
    add(None, "no-end")
    assert prune(db, CUT) == 2
    assert remaining() == ["at-cut", "new", "no-end"]
    assert prune(db, CUT) == 0


def test_prune_works_in_batches_and_reports_progress(db):
    for n in range(23):
        add(CUT - dt.timedelta(hours=n + 1), f"j{n:02d}")
    add(CUT + dt.timedelta(hours=1), "keep")
    seen: list[int] = []
    assert prune(db, CUT, batch_size=5, progress=seen.append) == 23
    assert seen == [5, 5, 5, 5, 3]
    assert remaining() == ["keep"]


def test_prune_with_rows_sharing_an_end_time_across_batches(db):
    for n in range(12):
        add(CUT - dt.timedelta(days=1), f"same{n:02d}")
    assert prune(db, CUT, batch_size=5) == 12
    assert remaining() == []


def test_aware_cut_off_is_converted_to_utc(db):
    add(CUT - dt.timedelta(minutes=30), "before")
    add(CUT + dt.timedelta(minutes=30), "after")
    two_hours_ahead = dt.timezone(dt.timedelta(hours=2))
    assert prune(db, dt.datetime(2024, 6, 1, 2, 0, tzinfo=two_hours_ahead)) == 1
    assert remaining() == ["after"]


def test_preview_counts_without_deleting(db):
    add(CUT - dt.timedelta(days=3), "a")
    add(CUT - dt.timedelta(days=1, microseconds=5), "b")
    add(CUT, "c")
    plan = preview(db, CUT)
    assert plan.would_delete == 2
    assert plan.oldest == (CUT - dt.timedelta(days=3)).replace(tzinfo=dt.UTC)
    assert plan.newest == (CUT - dt.timedelta(days=1, microseconds=5)).replace(tzinfo=dt.UTC)
    assert plan.line() == (
        "would delete 2 job history rows older than 2024-06-01T00:00:00Z "
        "(oldest 2024-05-29T00:00:00Z, newest 2024-05-30T23:59:59.999995Z)"
    )
    assert len(remaining()) == 3
    empty = preview(db, dt.datetime(2000, 1, 1))
    assert (empty.would_delete, empty.oldest, empty.newest) == (0, None, None)


def test_prune_result_line(db):
    add(CUT - dt.timedelta(days=1), "a")
    result = prune_result(db, CUT)
    assert result.deleted == 1
    assert result.line() == "deleted 1 job history row older than 2024-06-01T00:00:00Z"


def test_bad_batch_size(db):
    with pytest.raises(ValueError):
        prune(db, CUT, batch_size=0)


def test_database_error_is_reported_with_the_count_so_far(db, monkeypatch):
    for n in range(4):
        add(CUT - dt.timedelta(days=n + 1), f"j{n}")
    from slimyq.history import prune as prune_mod

    real = prune_mod._one_batch
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise peewee.OperationalError("connection reset by peer")
        return real(*args, **kw)

    monkeypatch.setattr(prune_mod, "_one_batch", flaky)
    with pytest.raises(PruneFailed) as info:
        prune(db, CUT, batch_size=2)
    assert info.value.deleted == 2
    assert info.value.exit_code == 1
    assert "run the prune again" in str(info.value)
    assert len(remaining()) == 2
