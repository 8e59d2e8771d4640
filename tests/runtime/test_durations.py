"""Job durations by type, and the jobs of short types that one job thread runs in a row."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from harness import Env, canaries, enqueue, leftovers, tally

from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.durations import ROW_BUDGET, SHORT, UNMEASURED, Durations, InARow
from slimyq.runtime.execute import Result
from slimyq.runtime.worker import QueueWorker


def _job(i: int, job_type: str) -> ClaimedJob:
    return ClaimedJob(f"j{i}", f"e{i}", {"meta": f'{{"type": "{job_type}"}}'.encode()})


def _took(seconds: float, **kw: Any) -> Result:
    return Result(ok=True, started=100.0, ended=100.0 + seconds, **kw)


def _short(d: Durations, *job_types: str, seconds: float = 0.0) -> None:
    for _ in range(300):  # from "unmeasured" (1 s) to about ``seconds``
        for job_type in job_types:
            d.ended(job_type, _took(seconds))


def test_unmeasured_types_run_alone() -> None:
    d = Durations()
    jobs = [_job(i, "canary") for i in range(4)]
    assert d.of("canary") >= SHORT and d.overall >= SHORT
    assert d.arrange(jobs) == jobs


def test_short_types_run_in_a_row_in_claim_order_and_the_others_alone() -> None:
    d = Durations()
    _short(d, "canary", "message_validation")
    d.ended("chat_bot_interaction", _took(0.05))
    jobs = [_job(0, "canary"), _job(1, "chat_bot_interaction"), _job(2, "message_validation"), _job(3, "canary")]
    assert d.arrange(jobs) == [InARow([jobs[0], jobs[2], jobs[3]]), jobs[1]]
    assert d.arrange([jobs[0], jobs[1]]) == [jobs[0], jobs[1]]  # one short job: no row


def test_a_type_that_slows_down_leaves_the_row() -> None:
    d = Durations()
    _short(d, "canary")
    assert d.of("canary") < SHORT
    for _ in range(5):
        d.ended("canary", _took(0.1))  # a few slow ones (a lock wait) weigh in at once
    assert d.of("canary") >= SHORT
    jobs = [_job(0, "canary"), _job(1, "canary")]
    assert d.arrange(jobs) == jobs


def test_a_row_holds_what_fits_in_its_budget() -> None:
    d = Durations()
    _short(d, "canary", seconds=ROW_BUDGET * 0.4)  # short, but only two fit in a row
    jobs = [_job(i, "canary") for i in range(5)]
    assert d.arrange(jobs) == [InARow(jobs[0:2]), InARow(jobs[2:4]), jobs[4]]


def test_a_type_that_takes_no_time_at_all_still_runs() -> None:
    d = Durations()
    d._by_type["canary"] = 0.0  # below any clock's resolution
    jobs = [_job(i, "canary") for i in range(3)]
    assert d.arrange(jobs[:1]) == jobs[:1] and d.arrange(jobs) == [InARow(jobs)]


def test_jobs_without_a_type_and_attempts_that_did_not_run_do_not_count() -> None:
    d = Durations()
    _short(d, "unknown")  # a plain RQ client's jobs: no type in their meta
    assert d.of("unknown") >= SHORT
    plain = [ClaimedJob(f"p{i}", f"e{i}", {}) for i in range(3)]
    assert d.arrange(plain) == plain
    for _ in range(300):
        d.ended("canary", _took(0.0, stopped=True))
        d.ended("canary", Result(ok=False, error_type="refused", started=100.0, ended=100.0))
    assert d.of("canary") >= SHORT


def test_the_averages_by_type_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from slimyq.runtime import durations

    monkeypatch.setattr(durations, "MAX_TYPES", 3)
    d = Durations()
    for name in ("a", "b", "c", "d"):
        d.ended(name, _took(0.0))
    assert d.of("d") < UNMEASURED and d.of("a") == durations.UNMEASURED  # forgotten, not grown


class _Seen:
    """Which thread ran which job (and, optionally, a hook before the first one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, first: Any = None) -> None:
        self.ran: list[tuple[int, str]] = []
        self.first = first
        real = QueueWorker._attempt

        def attempt(worker: QueueWorker, job: ClaimedJob) -> Result:
            if not self.ran and self.first is not None:
                self.first(worker)
            self.ran.append((threading.get_ident(), job.id))
            return real(worker, job)

        monkeypatch.setattr(QueueWorker, "_attempt", attempt)


def _worker(env: Env, concurrency: int = 10) -> QueueWorker:
    worker = QueueWorker(env.settings(), "chat", concurrency=concurrency, burst=True)  # not batched
    _short(worker.durations, "canary")
    return worker


def test_a_claims_short_jobs_run_on_one_thread_each_with_its_own_outcome(
        env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    row = canaries(env, 6, "chat", sleep=0.05)  # each would take a thread of its own
    alone = enqueue(env, "message_validation", [{"message": {"role": "user", "content": "hi"}}] * 3)
    seen = _Seen(monkeypatch)
    worker = _worker(env)
    handed: list[list[str]] = []
    real_end_all = worker._end_all
    monkeypatch.setattr(worker, "_end_all", lambda outcomes: (handed.append([j.id for j, _ in outcomes]),
                                                              real_end_all(outcomes))[1])
    assert worker.run() == 0
    assert row in handed  # the row's outcomes, handed over together in claim order
    threads = {job_id: ident for ident, job_id in seen.ran}
    assert len({threads[job_id] for job_id in row}) == 1  # the canaries: one thread, in claim order
    assert [job_id for _, job_id in seen.ran if job_id in row] == row
    t = tally(conn, row + alone)
    assert t.finished == 9 and t.duplicated == 0 and leftovers(conn) == {}


def test_a_stop_during_a_row_puts_its_jobs_not_started_back(
        env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    row = canaries(env, 5, "chat", sleep=0.2)
    seen = _Seen(monkeypatch, first=lambda worker: worker.request_stop())
    worker = _worker(env)
    worker.burst = False
    assert worker.run() == 0
    assert [job_id for _, job_id in seen.ran] == row[:1]  # the first ran; the rest never started
    t = tally(conn, row)
    assert t.finished == 1 and t.duplicated == 0
    assert [i.decode() for i in conn.lrange("rq:queue:chat", 0, -1)] == row[1:]  # type: ignore[union-attr]


def test_a_stop_job_for_a_job_waiting_in_a_row_stops_it_before_it_runs(
        env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    row = canaries(env, 3, "chat", sleep=0.1)
    stopped: list[list[str]] = []
    seen = _Seen(monkeypatch, first=lambda worker: stopped.append(worker.commands.stop_job(row[2])))
    assert _worker(env).run() == 0
    assert stopped == [[m for m in stopped[0] if m.startswith(f"{row[2]}:")]] and len(stopped[0]) == 1
    assert [job_id for _, job_id in seen.ran] == row
    assert [conn.hget(f"rq:job:{job_id}", "status") for job_id in row] == [b"finished", b"finished", b"stopped"]


def test_a_stopping_worker_hands_over_what_ended_in_a_row_while_a_later_job_still_runs(
        env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    row = canaries(env, 3, "chat")
    written = threading.Event()

    def second_waits_for_the_first_to_be_written(worker: QueueWorker) -> None:
        worker.request_stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not written.is_set():
            if conn.hget(f"rq:job:{row[0]}", "status") == b"finished":
                written.set()
            time.sleep(0.01)

    real = QueueWorker._attempt

    def attempt(worker: QueueWorker, job: ClaimedJob) -> Result:
        if job.id == row[1]:
            second_waits_for_the_first_to_be_written(worker)
        return real(worker, job)

    monkeypatch.setattr(QueueWorker, "_attempt", attempt)
    worker = _worker(env)
    worker.burst = False
    assert worker.run() == 0
    assert written.is_set()  # the first job's outcome was written while the second still ran
    assert [conn.hget(f"rq:job:{job_id}", "status") for job_id in row[:2]] == [b"finished", b"finished"]
    assert [i.decode() for i in conn.lrange("rq:queue:chat", 0, -1)] == row[2:]  # type: ignore[union-attr]


def test_a_stop_job_for_a_job_that_ended_in_a_row_leaves_its_outcome_alone(
        env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    row = canaries(env, 2, "chat", fail=1)  # each fails once (a retry), then succeeds
    asked: list[list[str]] = []
    real = QueueWorker._attempt

    def attempt(worker: QueueWorker, job: ClaimedJob) -> Result:
        if job.id == row[1] and not asked:
            asked.append(worker.commands.stop_job(row[0]))  # the first has ended, not handed over yet
        return real(worker, job)

    monkeypatch.setattr(QueueWorker, "_attempt", attempt)
    worker = _worker(env)
    worker.max_jobs = 2
    assert worker.run() == 0
    assert asked == [[]]  # neither running nor waiting: nothing to stop
    assert conn.hget(f"rq:job:{row[0]}", "status") != b"stopped"  # its failure stays a retry


def test_jobs_waiting_in_a_row_behind_a_stuck_job_go_back_without_waiting_for_the_grace(
        env: Env, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    env.reconfigure(worker={"shutdown_grace": 120})  # far longer than this test may wait
    row = canaries(env, 3, "chat")
    back = threading.Event()
    real = QueueWorker._attempt

    def attempt(worker: QueueWorker, job: ClaimedJob) -> Result:
        if job.id == row[1]:  # stuck, as _on_stuck finds it: the process restarts
            with worker.lock:
                worker._stuck.add(job.member)
            worker.restart("a job that does not stop")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not back.is_set():
                if conn.lrange("rq:queue:chat", 0, -1) == [row[2].encode()]:
                    back.set()
                time.sleep(0.02)
        return real(worker, job)

    monkeypatch.setattr(QueueWorker, "_attempt", attempt)
    worker = _worker(env)
    worker.burst = False
    worker.run()
    assert back.wait(20)  # the third went back while the second was still "stuck"
    assert conn.hget(f"rq:job:{row[0]}", "status") == b"finished"  # the first's outcome was written
