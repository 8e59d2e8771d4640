"""How many slots a worker claims at once: at once for long jobs, gathered for short ones."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from slimyq.config import Settings
from slimyq.runtime import worker as worker_mod
from slimyq.runtime.worker import QueueWorker


def _worker(tmp_path: Path, busy: int) -> QueueWorker:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", data_dir=tmp_path)
    worker = QueueWorker(settings, "chat", concurrency=10, conn=object())  # type: ignore[arg-type]
    worker._busy = busy
    return worker


def _free_later(worker: QueueWorker, slots: list[int]) -> threading.Thread:
    """Free ``slots`` one after the other, as jobs ending would (under the lock, notifying)."""

    def run() -> None:
        for n in slots:
            with worker.lock:
                worker._busy -= n
                worker.lock.notify_all()

    return threading.Thread(target=run)


def test_with_long_jobs_the_free_slots_are_claimed_at_once(tmp_path: Path) -> None:
    worker = _worker(tmp_path, busy=8)
    assert worker.durations.overall >= worker_mod.GATHER_UNDER  # not measured yet: taken as long
    assert worker._free_slots() == 2


def test_with_short_jobs_a_claim_waits_for_half_the_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "GATHER", 30.0)  # long enough that only the slots decide here
    worker = _worker(tmp_path, busy=8)
    worker.durations.overall = worker_mod.GATHER_UNDER / 10
    freeing = _free_later(worker, [1, 2])
    with worker.lock:  # held (re-entered by the claim): the freeing thread runs only while the claim waits
        freeing.start()
        assert worker._free_slots() == 5
    freeing.join()


def test_a_claim_does_not_wait_once_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "GATHER", 30.0)
    worker = _worker(tmp_path, busy=0)
    worker.durations.overall = 0.0
    worker.concurrency = 10
    assert worker._free_slots() == 10
    worker._busy = 9
    freeing = _free_later(worker, [9])
    with worker.lock:
        freeing.start()
        assert worker._free_slots() == 10  # every job ended: claim now, whatever the gathering
    freeing.join()


def _ending(worker: QueueWorker) -> list[Any]:
    """Stand-ins for the completer and the commands, so that jobs can end without Redis; returns
    what the completer was handed."""
    from slimyq.runtime.execute import Result

    handed: list[Any] = []

    class Completer:
        def put(self, outcomes: list[Any]) -> None:
            handed.extend(outcomes)

    class Commands:
        def outcome(self, member: str, result: Result) -> Result:
            return result

    worker.completer = Completer()  # type: ignore[assignment]
    worker.commands = Commands()  # type: ignore[assignment]
    return handed


def test_the_average_follows_the_jobs_that_end(tmp_path: Path) -> None:
    from slimyq.runtime.codec import ClaimedJob
    from slimyq.runtime.execute import Result

    worker = _worker(tmp_path, busy=120)
    handed = _ending(worker)
    for i in range(120):  # from "long" (1 s) to under 2 ms: about a hundred jobs
        worker._end(ClaimedJob(f"j{i}", f"e{i}", {}), Result(ok=True, started=100.0, ended=100.0001))
    assert worker.durations.overall < worker_mod.GATHER_UNDER and len(handed) == 120 and worker._busy == 0


def test_a_job_that_ends_wakes_the_claim_only_once_enough_slots_are_free(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from slimyq.runtime.codec import ClaimedJob
    from slimyq.runtime.execute import Result

    worker = _worker(tmp_path, busy=10)
    _ending(worker)
    woken: list[int] = []
    notify_all = worker.lock.notify_all
    monkeypatch.setattr(worker.lock, "notify_all", lambda: (woken.append(worker._busy), notify_all())[1])
    worker._wake_free = 5  # as while a claim gathers (_free_slots)
    for i in range(10):
        worker._end(ClaimedJob(f"j{i}", f"e{i}", {}), Result(ok=True, started=100.0, ended=100.001))
    assert woken == [5, 4, 3, 2, 1, 0]  # five slots free, and from then on
    worker._busy, worker._wake_free = 2, 1
    woken.clear()
    worker._end(ClaimedJob("j", "e", {}), Result(ok=True, started=100.0, ended=100.001))
    assert woken == [1]  # waiting for any free slot: every end wakes it
