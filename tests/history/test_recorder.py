"""The write-behind recorder on SQLite, PostgreSQL and MariaDB: rows for every outcome, batching,
idempotent re-flushes, database outages (a failing factory, and killed server connections), the
bounded buffer and the graceful close."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator

import peewee
import pytest

from slimyq.db import connect_url
from slimyq.db.models import JobRun
from slimyq.history.queries import job_runs_for
from slimyq.history.recorder import ERROR_MESSAGE_MAX, HistoryRecorder, RecorderStats, RunRow, row_values

T0 = 1_717_243_200.123456  # 2024-06-01T12:00:00.123456Z


def row(job: str, attempt: int = 1, state: str = "finished", **kw: object) -> RunRow:
    fields: dict[str, object] = {"queue": "database", "job_type": "save_message", "started": T0, "ended": T0 + 0.25}
    fields.update(kw)
    return RunRow(job, attempt=attempt, state=state, **fields)  # type: ignore[arg-type]


def count() -> int:
    return int(JobRun.select().count())


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def recorders() -> Iterator[list[HistoryRecorder]]:
    made: list[HistoryRecorder] = []
    yield made
    for rec in made:
        rec.close(timeout=2)


@pytest.fixture
def make(recorders: list[HistoryRecorder]) -> Callable[..., HistoryRecorder]:
    def build(factory: Callable[[], peewee.Database], **kw: object) -> HistoryRecorder:
        rec = HistoryRecorder(factory, **kw)  # type: ignore[arg-type]
        recorders.append(rec)
        return rec

    return build


class Switch:
    """A db_factory that raises OperationalError while ``down`` (a database outage)."""

    def __init__(self, db: peewee.Database, down: bool = True) -> None:
        self.db = db
        self.down = down
        self.calls = 0

    def __call__(self) -> peewee.Database:
        self.calls += 1
        if self.down:
            raise peewee.OperationalError("connection refused")
        return self.db


# ----------------------------------------------------------------- rows for every outcome


def test_rows_for_finished_retried_failed_and_refused(db, make):
    rec = make(lambda: db, flush_every=0.05)
    rec.record(row("job-ok", user_id="u1", enqueued=T0 - 1, worker="w1"))
    rec.record(row("job-retry", 1, "retried", error_type="timeout", error_message="took too long"))
    rec.record(row("job-retry", 2, "finished", started=T0 + 2, ended=T0 + 2.5))
    rec.record(row("job-bad", 1, "failed", error_type="ValueError", error_message="x" * 5000))
    rec.record(row("job-refused", 1, "refused", job_type="unknown", started=T0, ended=T0,
                   error_type="refused", error_message="refused: 'os.system' is not a registered slimyq job type"))
    assert rec.flush(10)
    assert count() == 5

    ok = job_runs_for(db, "job-ok")
    assert len(ok) == 1
    assert ok[0].state == "finished"
    assert ok[0].user_id == "u1"
    assert ok[0].worker == "w1"
    assert ok[0].started_at == dt.datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert ok[0].enqueued_at == dt.datetime(2024, 6, 1, 11, 59, 59, 123456, tzinfo=dt.UTC)
    assert ok[0].duration_ms == pytest.approx(250.0, abs=0.01)

    retry = job_runs_for(db, "job-retry")
    assert [(r.attempt, r.state, r.error_type) for r in retry] == [(1, "retried", "timeout"), (2, "finished", None)]

    bad = job_runs_for(db, "job-bad")[0]
    assert bad.state == "failed"
    assert bad.error_message == "x" * ERROR_MESSAGE_MAX

    refused = job_runs_for(db, "job-refused")[0]
    assert (refused.state, refused.job_type, refused.duration_ms) == ("refused", "unknown", 0.0)
    assert rec.stats() == RecorderStats(0, 0, None)


def test_batch_size_triggers_a_write_before_the_interval(db, make):
    rec = make(lambda: db, flush_every=60, batch=5)
    for n in range(4):
        rec.record(row(f"j{n}"))
    time.sleep(0.2)
    assert count() == 0  # neither the interval nor the batch size reached
    rec.record(row("j4"))
    assert wait_for(lambda: count() == 5)


def test_interval_triggers_a_write(db, make):
    rec = make(lambda: db, flush_every=0.1, batch=500)
    rec.record(row("j1"))
    assert wait_for(lambda: count() == 1)


def test_close_flushes_everything(db, make):
    rec = make(lambda: db, flush_every=60, batch=7)
    for n in range(30):
        rec.record(row(f"j{n}"))
    assert rec.close(timeout=10) == 0
    assert count() == 30
    assert rec.stats().buffered == 0
    assert rec.close(timeout=1) == 0  # idempotent
    rec.record(row("late"))  # after close: counted, never raises
    assert rec.dropped == 1


def test_a_reflushed_batch_inserts_nothing_twice(db, make):
    rec = make(lambda: db, flush_every=0.05)
    rows = [row(f"j{n}", attempt) for n in range(5) for attempt in (1, 2)]
    for r in rows:
        rec.record(r)
    assert rec.flush(10)
    for r in rows:  # the same attempts again (a retry after a lost commit reply)
        rec.record(r)
    rec.record(row("j0", 3))
    assert rec.flush(10)
    assert count() == 11
    assert rec.written == 21


def test_the_writer_holds_forks_off_only_while_it_works_with_sqlite(db, make):
    """In a ``--fork`` worker a fork waits for the writer's SQLite work (slimyq.db.sqlite.unforked);
    on PostgreSQL or MySQL there is nothing to wait for, and a connect that hangs on the network
    must not hold job processes back."""
    from slimyq.db.sqlite import SerializedSqliteDatabase

    rec = make(lambda: db, flush_every=0.05)
    rec.record(row("j1", 1))
    assert rec.flush(10)
    sqlite = isinstance(db, SerializedSqliteDatabase)
    assert rec._sqlite is sqlite
    guard = rec._unforked()
    assert isinstance(guard, contextlib.nullcontext) is not sqlite


# ----------------------------------------------------------------- outages


def test_buffer_survives_an_outage_of_a_few_seconds(db, make, caplog):
    caplog.set_level(logging.WARNING, logger="slimyq.history")
    factory = Switch(db, down=True)
    rec = make(factory, flush_every=0.05, batch=3, max_backoff=0.5)
    for n in range(10):
        rec.record(row(f"j{n}"))  # never blocks, never raises
    assert wait_for(lambda: rec.stats().last_error is not None)
    time.sleep(2.0)  # the outage goes on; more rows arrive meanwhile
    for n in range(10, 20):
        rec.record(row(f"j{n}"))
    buffered, dropped, last_error = rec.stats()
    assert (buffered, dropped) == (20, 0)
    assert last_error == "connection refused"
    assert factory.calls > 2  # retried
    assert count() == 0

    factory.down = False
    assert rec.flush(10)
    assert count() == 20
    assert rec.stats() == RecorderStats(0, 0, None)
    outage = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(outage) == 1  # logged once per outage, not once per retry
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def _kill_other_connections(url: str) -> int:
    admin = connect_url(url)
    try:
        if isinstance(admin, peewee.PostgresqlDatabase):
            cur = admin.execute_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return len(cur.fetchall())
        ids = admin.execute_sql(
            "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        ).fetchall()
        for (pid,) in ids:
            admin.execute_sql(f"KILL CONNECTION {int(pid)}")
        return len(ids)
    finally:
        admin.close()


def test_recorder_reconnects_after_the_server_drops_its_connection(database_url, db, make, caplog):
    if database_url.startswith("sqlite"):
        pytest.skip("no server connection to drop on SQLite")
    caplog.set_level(logging.WARNING, logger="slimyq.history")
    own = connect_url(database_url)  # the recorder's own Database object
    rec = make(lambda: own, flush_every=0.05, max_backoff=0.5)
    rec.record(row("before"))
    assert rec.flush(10)

    assert _kill_other_connections(database_url) >= 1
    for n in range(5):
        rec.record(row(f"after{n}"))
    assert rec.flush(15)
    assert rec.stats() == RecorderStats(0, 0, None)
    assert any("cannot write" in r.getMessage() for r in caplog.records)  # it did notice

    check = connect_url(database_url)
    try:
        assert check.execute_sql("SELECT COUNT(*) FROM job_runs").fetchone()[0] == 6
    finally:
        check.close()
        own.close()


def test_close_waits_out_a_short_outage(db, make):
    factory = Switch(db, down=True)
    rec = make(factory, flush_every=0.05, max_backoff=30)
    for n in range(4):
        rec.record(row(f"j{n}"))
    assert wait_for(lambda: factory.calls >= 3)  # backing off by now
    threading.Timer(0.8, lambda: setattr(factory, "down", False)).start()
    assert rec.close(timeout=8) == 0
    assert count() == 4


def test_close_gives_up_at_its_timeout_and_counts_the_rest(db, make):
    rec = make(Switch(db, down=True), flush_every=0.05, max_backoff=30)
    for n in range(3):
        rec.record(row(f"j{n}"))
    started = time.monotonic()
    assert rec.close(timeout=0.5) == 3
    assert time.monotonic() - started < 5
    assert rec.dropped == 3
    assert count() == 0


def test_full_buffer_drops_the_oldest_and_counts_them(db, make, caplog):
    caplog.set_level(logging.WARNING, logger="slimyq.history")
    factory = Switch(db, down=True)
    rec = make(factory, flush_every=0.02, batch=4, max_buffer=10, max_backoff=0.05)
    for n in range(25):
        rec.record(row(f"j{n:02d}"))
        time.sleep(0.005)  # writes keep failing meanwhile
    assert rec.dropped == 15
    assert rec.stats().buffered == 10
    factory.down = False
    assert rec.flush(10)
    kept = sorted(r.job_id for r in JobRun.select(JobRun.job_id))
    assert kept == [f"j{n:02d}" for n in range(15, 25)]  # the newest survive
    assert rec.stats().dropped == 15
    assert sum("buffer full" in r.getMessage() for r in caplog.records) == 1


def test_a_row_the_database_refuses_does_not_hold_back_the_others(db, make):
    rec = make(lambda: db, flush_every=0.05)
    rec.record(row("good1"))
    rec.record(row("huge", attempt=2**40))  # out of range for an INTEGER column on PostgreSQL
    rec.record(row("good2"))
    assert rec.flush(10)
    assert {r.job_id for r in JobRun.select(JobRun.job_id)} >= {"good1", "good2"}
    assert rec.stats().buffered == 0


# ----------------------------------------------------------------- values


def test_row_values_cut_strings_and_fill_in_times():
    values = row_values(
        RunRow("j" * 300, "q" * 100, "t" * 200, 1, "finished", user_id="u" * 300, worker="w" * 300,
               error_type="e" * 300, error_message="m" * 3000, started=T0, ended=None),
        now=T0 + 1.5,
    )
    assert len(values["job_id"]) == 128
    assert len(values["queue"]) == 64
    assert len(values["job_type"]) == 100
    assert len(values["user_id"]) == len(values["worker"]) == 191
    assert len(values["error_type"]) == 100
    assert len(values["error_message"]) == 2000
    assert values["ended_at"] == dt.datetime(2024, 6, 1, 12, 0, 1, 623456)
    assert values["duration_ms"] == pytest.approx(1500.0)
    assert values["enqueued_at"] is None


def test_row_values_accept_datetimes_and_keep_an_explicit_duration():
    aware = dt.datetime(2024, 6, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    values = row_values(RunRow("j", "q", "t", 1, "failed", started=aware, ended=dt.datetime(2024, 6, 1, 12, 0, 1),
                               duration_ms=42.0))
    assert values["started_at"] == dt.datetime(2024, 6, 1, 12, 0)
    assert values["ended_at"] == dt.datetime(2024, 6, 1, 12, 0, 1)
    assert values["duration_ms"] == 42.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        HistoryRecorder(lambda: None, batch=0)  # type: ignore[arg-type,return-value]
