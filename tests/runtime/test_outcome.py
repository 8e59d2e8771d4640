"""Deciding an attempt's outcome: infrastructure retries share one record; schema bugs are not
infrastructure; a job the rules can't be applied to is refused."""

from __future__ import annotations

import json

import peewee

from slimyq.config import QueueSettings
from slimyq.runtime.codec import CONFLICT_ERROR, ClaimedJob
from slimyq.runtime.execute import Result, database_unavailable
from slimyq.runtime.outcome import INFRA_DELAY, decide, refusal

QS = QueueSettings(concurrency=1, timeout=10, attempts=3)
INFRA = Result(ok=False, error_type="database_unavailable", error="connection refused", infra=True,
               started=100.0, ended=100.5)


def _next(job: ClaimedJob, result: Result) -> ClaimedJob:
    """The job as the next claim sees it, after ``result`` was written."""
    c = decide(job, result, QS, "w")
    raw = {"retries_left": str(c.args[7]).encode(), "slimyq_attempts": c.args[5].encode()}
    return ClaimedJob(job.id, "e", raw)


def test_retries_for_an_unreachable_database_share_one_record_and_no_attempt_number() -> None:
    job = ClaimedJob("j1", "e", {"retries_left": b"2"})
    for _ in range(120):
        job = _next(job, INFRA)
    (record,) = job.attempts
    assert record["tries"] == 120 and record["errorType"] == "database_unavailable"
    assert job.attempt == 1 and job.retries_left(0) == 2
    # Past INFRA_RETRIES the normal rules apply: a real attempt is used and numbered 1.
    job = _next(job, INFRA)
    assert [a["attempt"] for a in job.attempts] == [1, 1] and job.retries_left(0) == 1
    assert job.attempt == 2
    done = decide(job, Result(ok=True, value=1, started=200.0, ended=201.0), QS, "w")
    assert [a["outcome"] for a in json.loads(done.args[5])] == ["retried", "retried", "finished"]
    assert done.attempt == 2


def test_a_missing_table_is_a_code_bug_not_an_outage() -> None:
    assert database_unavailable(peewee.OperationalError("unable to open database file"))
    assert database_unavailable(peewee.OperationalError("database is locked"))
    assert not database_unavailable(peewee.OperationalError("no such table: chat_conversations"))
    assert not database_unavailable(peewee.OperationalError("table x has no column named y"))
    assert not database_unavailable(ValueError("no such table"))


def test_refusal_reads_nothing_from_the_hash() -> None:
    job = ClaimedJob("j1", "e1", {"retries_left": b"inf", "slimyq_attempts": b"[1]"})
    c = refusal(job, "refused: odd", "w")
    assert c.args[2] == "fail" and c.label == "refused"
    assert json.loads(c.args[5])[0]["error"] == "refused: odd"


def test_batch_rollbacks_use_no_attempt_are_not_counted_and_share_the_infra_cap() -> None:
    rolled = Result(ok=False, error_type="batch_rolled_back", error="rolled back", infra=True,
                    started=100.0, ended=100.5)
    job = ClaimedJob("j1", "e", {"retries_left": b"2"})
    first = decide(job, rolled, QS, "w")
    assert first.rerun and not first.counted and first.attempt == 1  # no history row, no metrics
    assert decide(job, INFRA, QS, "w").counted  # an outage's retry is counted as before
    for _ in range(60):
        job = _next(job, INFRA)
    for _ in range(60):
        job = _next(job, rolled)
    assert job.retries_left(0) == 2 and job.attempt == 1
    # 120 reruns of either kind: the normal rules apply again (a real attempt is used).
    past = decide(job, rolled, QS, "w")
    assert not past.rerun and past.counted and past.args[2] == "retry" and past.args[7] == 1


def test_a_deadlocks_victim_runs_again_at_once_without_using_an_attempt() -> None:
    job = ClaimedJob("j1", "e", {"retries_left": b"2"})
    conflict = Result(ok=False, error_type=CONFLICT_ERROR, error="deadlock detected", infra=True,
                      started=100.0, ended=100.5)
    c = decide(job, conflict, QS, "w")
    assert c.args[2] == "retry" and float(c.args[6]) == 0.0  # no delay: to the front of the queue
    assert c.args[7] == 2 and c.rerun and c.counted  # no attempt used; a real event in the metrics
    unreachable = decide(job, INFRA, QS, "w")
    assert float(unreachable.args[6]) == INFRA_DELAY  # an outage waits
    rolled = Result(ok=False, error_type="batch_rolled_back", error="rolled back", infra=True, started=100.0,
                    ended=100.5)
    assert float(decide(job, rolled, QS, "w").args[6]) == 0.0  # a batch-mate of the victim: at once too


def test_a_job_that_keeps_meeting_conflicts_backs_off_with_jitter_up_to_a_second() -> None:
    """Two workers that keep deadlocking each other fall out of step instead of spending the
    shared rerun cap (120) in a second: the first rerun is at once, then 50 ms doubling to 1 s."""
    from slimyq.runtime.outcome import RERUN_MAX_BACKOFF, rerun_delay

    conflict = Result(ok=False, error_type=CONFLICT_ERROR, error="deadlock detected", infra=True,
                      started=100.0, ended=100.5)
    job = ClaimedJob("j1", "e", {"retries_left": b"2"})
    delays = []
    for _ in range(12):
        c = decide(job, conflict, QS, "w")
        delays.append(float(c.args[6]))
        job = _next(job, conflict)
    assert delays[0] == 0.0
    assert 0.025 <= delays[1] <= 0.05 and 0.05 <= delays[2] <= 0.1
    assert all(RERUN_MAX_BACKOFF / 2 <= d <= RERUN_MAX_BACKOFF for d in delays[6:])
    assert job.attempt == 1 and job.retries_left(0) == 2  # none of it used up an attempt
    assert len({rerun_delay(3) for _ in range(20)}) > 1  # jittered
