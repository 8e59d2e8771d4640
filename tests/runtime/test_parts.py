"""A claim's batch split by user into transactions at once when the database is far away (a
measured round trip), one batch per claim when it is close."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Env, WorkerProc, at, attempts, conversations, enqueue, leftovers, wait_done, wait_until

from slimyq.runtime import parts as parts_mod
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.parts import Splitter, at_once, parts

ROOT = Path(__file__).resolve().parents[2]


def _job(job_id: str, user: str | None) -> ClaimedJob:
    meta = f'{{"type": "create_conversation", "user": "{user}"}}' if user else '{"type": "create_conversation"}'
    return ClaimedJob(job_id, f"e-{job_id}", {"meta": meta.encode()})


def test_one_transaction_per_claim_on_sqlite_without_batching_or_without_batchable_types() -> None:
    assert at_once(True, 10, "sqlite:///x.db", "database") == 1 and at_once(True, 10, "SQLite:///x.db", "database") == 1
    assert at_once(False, 10, "postgresql://u@h/db", "database") == 1
    assert at_once(True, 10, "postgresql://u@h/db", "chat") == 1  # nothing batchable there: no probe either
    assert at_once(True, 10, "postgresql://u@h/db", "database") == 10
    assert at_once(True, 4, "mysql://u@h/db", "database") == 4


def test_a_users_jobs_stay_together_in_claim_order_and_no_part_is_empty() -> None:
    claim = [_job("1", "ann"), _job("2", "bob"), _job("3", "ann"), _job("4", None), _job("5", "cy"),
             _job("6", "bob"), _job("7", None), _job("8", "ann")]
    split = parts(claim, 10)
    ids = [[job.id for job in part] for part in split]
    assert sorted(i for part in ids for i in part) == [j.id for j in claim]  # every job once
    assert ["1", "3", "8"] in ids and ["2", "6"] in ids and ["5"] in ids  # a user's, in claim order
    assert ["4"] in ids and ["7"] in ids  # no user: a part of its own
    assert all(ids)
    few = [[job.id for job in part] for part in parts(claim, 2)]  # at most two: groups packed, kept whole
    assert len(few) == 2 and sorted(i for part in few for i in part) == [j.id for j in claim]
    assert all(part == sorted(part) for part in few)  # claim order within each part
    ann = next(part for part in few if "1" in part)
    assert {"3", "8"} <= set(ann)  # ann's jobs together
    assert [[job.id for job in p] for p in parts(claim, 1)] == [[j.id for j in claim]]
    assert parts([], 10) == []


class _FakeDb:
    """A database whose ``SELECT 1`` takes ``seconds`` (the GIL released meanwhile, as a driver does)."""

    def __init__(self, seconds: float, closed: bool = False) -> None:
        self.seconds, self.closed, self.calls = seconds, closed, 0

    def is_closed(self) -> bool:
        return self.closed

    def cursor(self) -> _FakeDb:
        return self

    def execute(self, sql: str) -> None:
        assert sql == "SELECT 1"
        self.calls += 1
        time.sleep(self.seconds)

    def fetchall(self) -> list[tuple[int]]:
        return [(1,)]

    def close(self) -> None:
        pass


def _due_again(splitter: Splitter) -> None:
    splitter._due = 0.0


def test_the_splitter_splits_while_the_round_trip_is_long_and_measures_again_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    splitter = Splitter(10)
    assert splitter.now == 1  # one batch per claim until measured
    splitter.measure(lambda: None)
    splitter.measure(lambda: _FakeDb(0.002, closed=True))
    assert splitter.latency is None and splitter.due()  # a probe never opens the database or connects
    far = _FakeDb(0.002)
    splitter.measure(lambda: far)
    assert splitter.now == 10 and far.calls == parts_mod.PROBES
    splitter.measure(lambda: far)
    assert far.calls == parts_mod.PROBES and not splitter.due()  # measured again only after PROBE_EVERY

    def down() -> Any:
        raise OSError("connection refused")

    _due_again(splitter)
    splitter.measure(down)  # a failed measurement changes nothing
    assert splitter.now == 10
    _due_again(splitter)
    monkeypatch.setattr(parts_mod, "round_trip", lambda db: parts_mod.JOIN_LATENCY / 2)  # the database came close
    splitter.measure(lambda: _FakeDb(0.0))
    assert splitter.now == 1 and splitter.latency == parts_mod.JOIN_LATENCY / 2
    never = Splitter(1)  # SQLite: nothing to measure
    assert not never.due()
    never.measure(down)
    assert never.now == 1


def test_between_the_two_thresholds_the_splitter_keeps_what_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[float] = []
    monkeypatch.setattr(parts_mod, "round_trip", lambda db: measured.pop(0))
    splitter = Splitter(10)
    between = (parts_mod.SPLIT_LATENCY + parts_mod.JOIN_LATENCY) / 2
    for latency, now in [(between, 1), (parts_mod.SPLIT_LATENCY, 10), (between, 10), (parts_mod.JOIN_LATENCY, 10),
                         (parts_mod.JOIN_LATENCY * 0.9, 1), (between, 1)]:
        measured.append(latency)
        _due_again(splitter)
        splitter.measure(lambda: _FakeDb(0.0))
        assert (splitter.latency, splitter.now) == (latency, now)


def test_the_probe_lowers_the_switch_interval_while_it_waits_and_puts_it_back() -> None:
    """A thread that gets its reply must take the GIL back from a thread running Python code,
    which by default can take 5 ms (the switch interval): a busy worker would see a database on
    its own host 5 ms away. The probe lowers the interval while it runs, and puts it back even
    when the database fails."""
    seen: list[float] = []

    class Recording(_FakeDb):
        def execute(self, sql: str) -> None:
            seen.append(sys.getswitchinterval())
            super().execute(sql)

    default = sys.getswitchinterval()
    parts_mod.round_trip(Recording(0.0))
    assert seen == pytest.approx([parts_mod.PROBE_SWITCH_INTERVAL] * parts_mod.PROBES)  # (microsecond steps)
    assert seen[0] <= default / 100 and sys.getswitchinterval() == default

    class Failing(_FakeDb):
        def execute(self, sql: str) -> None:
            raise OSError("server closed the connection")

    with pytest.raises(OSError):
        parts_mod.round_trip(Failing(0.0))
    assert sys.getswitchinterval() == default


@pytest.fixture
def far_pg_url(private_pg_url: str) -> Iterator[str]:
    """``private_pg_url`` through scripts/tcpproxy.py adding 2 ms to every round trip."""
    import socket
    import urllib.parse

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = urllib.parse.urlsplit(private_pg_url)
    proxy = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "tcpproxy.py"), f"127.0.0.1:{port}",
                              f"{url.hostname or '127.0.0.1'}:{url.port or 5432}", "--delay-ms", "2",
                              "--tag", "slimyq-test-parts"], stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"
        user = url.netloc.rpartition("@")[0]
        yield url._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{port}").geturl()
    finally:
        proxy.kill()
        proxy.wait()


@pytest.mark.postgres
def test_with_the_database_far_away_a_claims_users_run_at_once(
        tmp_path: Path, redis_url: str, far_pg_url: str, start: Callable[..., WorkerProc]) -> None:
    """2 ms per round trip: once measured, a claim's jobs of different users run as transactions
    at once (their runs overlap in time), where one batch would run them one after the other; a
    user's two jobs share one transaction and run in claim order."""
    env = Env.make(tmp_path / "far", redis_url, far_pg_url)
    conn = env.conn()
    worker = start("database", "--concurrency", "10", on=env)
    first = conversations(env, 1, user="warm-up")  # its claim is one batch; the round trip is measured
    assert wait_done(conn, first, 60).finished == 1, worker.log()[-3000:]
    # the round trip is timed right after that job, on its thread: once it is, claims are split
    wait_until(lambda: "transactions at once" in worker.log(), 30, 0.05, "the round trip measured")
    conn.set("slimyq:paused:database", 1)  # enqueued while paused: the 8 jobs are one claim
    users = [f"user-{n}-{uuid.uuid4().hex[:6]}" for n in range(4)]
    ids = enqueue(env, "create_conversation", [{"userId": user, "title": f"t{k}"} for k in range(2) for user in users])
    conn.delete("slimyq:paused:database")
    t = wait_done(conn, ids, 60)
    assert (t.finished, t.failed, t.duplicated) == (8, 0, 0), worker.log()[-3000:]
    assert "transactions at once" in worker.log(), worker.log()[-3000:]
    span = {i: (at(run["startedAt"]), at(run["endedAt"])) for i, run in ((i, attempts(conn, i)[-1]) for i in ids)}

    firsts, seconds = ids[:4], ids[4:]  # user n's two jobs: firsts[n], then seconds[n]
    users_runs = [(span[first][0], span[second][1]) for first, second in zip(firsts, seconds, strict=True)]
    overlapping = [(a, b) for i, a in enumerate(users_runs) for b in users_runs[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, users_runs  # users' transactions at once (their threads connect one at a time)
    for first, second in zip(firsts, seconds, strict=True):  # a user's jobs: one transaction, in claim order
        assert span[first][1] <= span[second][0], (span[first], span[second])
    worker.stop()
    assert leftovers(conn) == {}
