"""History queries on SQLite, PostgreSQL and MariaDB: listings and filters, and SQL aggregates
that equal figures computed by hand (and by a reference percentile in Python)."""

from __future__ import annotations

import datetime as dt
import math
import random
from itertools import count as counter

import pytest

from slimyq.db.models import JOB_RUN_STATES, JobRun
from slimyq.history.queries import job_runs_for, list_runs, run_stats

NOW = dt.datetime(2024, 6, 10, 12, 0)
SINCE = NOW - dt.timedelta(hours=24)
_ids = counter()


def add(queue: str, job_type: str, state: str, duration: float | None, *, ended: dt.datetime = NOW,
        job_id: str | None = None, attempt: int = 1, user: str | None = None) -> None:
    JobRun.insert(job_id=job_id or f"job-{next(_ids)}", queue=queue, job_type=job_type, attempt=attempt,
                  state=state, duration_ms=duration, ended_at=ended, user_id=user).execute()


def reference_percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    ordered = sorted(values)
    pos = p * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


@pytest.fixture
def dataset(db) -> None:
    for n, ms in enumerate([10, 20, 30, 40, 1000]):
        add("database", "save_message", "finished" if n < 4 else "failed", ms)
    add("database", "create_conversation", "finished", 5)
    add("database", "create_conversation", "retried", 15)
    add("chat", "chat_bot_interaction", "refused", None)
    add("chat", "chat_bot_interaction", "failed", 100)
    add("database", "save_message", "failed", 99_999, ended=SINCE - dt.timedelta(seconds=1))  # too old


def _by(rows, *keys):
    return {tuple(getattr(r, k) for k in keys): r for r in rows}


def test_stats_per_type_equal_hand_computed_figures(dataset, db):
    stats = run_stats(db, since=SINCE)
    by_type = _by(stats.by_type, "queue", "job_type")
    assert set(by_type) == {("database", "save_message"), ("database", "create_conversation"),
                            ("chat", "chat_bot_interaction")}

    save = by_type["database", "save_message"]
    assert (save.runs, save.finished, save.failed, save.retried) == (5, 4, 1, 0)
    assert save.failure_rate == 20.0
    assert save.p50_ms == pytest.approx(30.0)
    assert save.p95_ms == pytest.approx(808.0)  # 40 + 0.8 * (1000 - 40)
    assert save.max_ms == pytest.approx(1000.0)

    create = by_type["database", "create_conversation"]
    assert (create.runs, create.finished, create.failed, create.retried) == (2, 1, 0, 1)
    assert create.failure_rate == 0.0
    assert create.p50_ms == pytest.approx(10.0)
    assert create.p95_ms == pytest.approx(14.5)
    assert create.max_ms == pytest.approx(15.0)

    chat = by_type["chat", "chat_bot_interaction"]
    assert (chat.runs, chat.finished, chat.failed) == (2, 0, 2)
    assert chat.failure_rate == 100.0
    assert chat.p50_ms == chat.p95_ms == chat.max_ms == pytest.approx(100.0)  # refused: no duration


def test_stats_per_queue_equal_hand_computed_figures(dataset, db):
    by_queue = _by(run_stats(db, since=SINCE).by_queue, "queue")
    database = by_queue["database",]
    assert database.job_type is None
    assert (database.runs, database.finished, database.failed, database.retried) == (7, 5, 1, 1)
    assert database.failure_rate == round(100 / 6, 2)
    assert database.p50_ms == pytest.approx(20.0)  # 5 10 15 [20] 30 40 1000
    assert database.p95_ms == pytest.approx(712.0)  # 40 + 0.7 * 960
    assert database.max_ms == pytest.approx(1000.0)
    assert by_queue["chat",].runs == 2


def test_stats_since_and_queue_filters(dataset, db):
    everything = _by(run_stats(db, since=None).by_queue, "queue")
    assert everything["database",].runs == 8
    assert everything["database",].max_ms == pytest.approx(99_999.0)

    only_chat = run_stats(db, since=SINCE, queue="chat")
    assert [r.queue for r in only_chat.by_queue] == ["chat"]
    assert [r.job_type for r in only_chat.by_type] == ["chat_bot_interaction"]

    assert run_stats(db, since=NOW + dt.timedelta(seconds=1)).by_queue == []


def test_stats_percentiles_match_a_reference_on_random_data(db):
    rng = random.Random(20240610)
    groups: dict[str, list[float]] = {}
    for job_type in ("a", "b", "c"):
        values = [round(rng.lognormvariate(3, 1), 3) for _ in range(rng.randint(1, 60))]
        values += values[:3]  # ties
        groups[job_type] = values
        for ms in values:
            add("database", job_type, rng.choice(["finished", "failed", "retried"]), ms)
    stats = _by(run_stats(db, since=None).by_type, "job_type")
    for job_type, values in groups.items():
        row = stats[job_type,]
        assert row.runs == len(values)
        assert row.p50_ms == pytest.approx(reference_percentile(values, 0.5), abs=1e-3)
        assert row.p95_ms == pytest.approx(reference_percentile(values, 0.95), abs=1e-3)
        assert row.max_ms == pytest.approx(max(values))
    everything = run_stats(db, since=None).by_queue[0]
    every_value = [v for values in groups.values() for v in values]
    assert everything.p95_ms == pytest.approx(reference_percentile(every_value, 0.95), abs=1e-3)


def test_stats_sections_for_rendering(dataset, db):
    sections = run_stats(db, since=SINCE).sections()
    assert set(sections) == {"by_queue", "by_type"}
    assert "job_type" not in sections["by_queue"][0]


# ----------------------------------------------------------------- listings


def test_list_runs_newest_first_with_filters(db):
    for n in range(6):
        add("database" if n % 2 else "chat", "save_message" if n % 3 else "canary",
            "failed" if n == 4 else "finished", n, ended=NOW + dt.timedelta(minutes=n), job_id=f"j{n}",
            user="u1" if n < 3 else "u2")
    assert [r.job_id for r in list_runs(db)] == ["j5", "j4", "j3", "j2", "j1", "j0"]
    assert [r.job_id for r in list_runs(db, limit=2)] == ["j5", "j4"]
    assert [r.job_id for r in list_runs(db, state="failed")] == ["j4"]
    assert [r.job_id for r in list_runs(db, job_type="canary")] == ["j3", "j0"]
    assert [r.job_id for r in list_runs(db, user="u1", queue="database")] == ["j1"]
    assert [r.job_id for r in list_runs(db, since=NOW + dt.timedelta(minutes=4))] == ["j5", "j4"]
    aware = (NOW + dt.timedelta(minutes=4)).replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert [r.job_id for r in list_runs(db, since=aware)] == ["j5", "j4"]
    first = list_runs(db, limit=1)[0]
    assert first.ended_at == (NOW + dt.timedelta(minutes=5)).replace(tzinfo=dt.UTC)
    assert list_runs(db, state="canceled") == []


def test_job_runs_for_lists_every_attempt_in_order(db):
    add("database", "canary", "finished", 3, job_id="j", attempt=3)
    add("database", "canary", "retried", 1, job_id="j", attempt=1)
    add("database", "canary", "retried", 2, job_id="j", attempt=2)
    add("database", "canary", "finished", 1, job_id="other")
    assert [(r.attempt, r.state) for r in job_runs_for(db, "j")] == [(1, "retried"), (2, "retried"), (3, "finished")]
    assert job_runs_for(db, "missing") == []


def test_cli_states_match_the_model():
    from slimyq.cli.history import STATES

    assert STATES == JOB_RUN_STATES
