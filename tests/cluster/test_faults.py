"""Faults across hosts: two worker hosts (network namespaces) on one Valkey and one PostgreSQL,
one of them partitioned, killed, frozen or running with a skewed clock while it runs jobs.

Every test counts on PostgreSQL: one ``chat_conversations`` row per job (nothing lost, no effect
doubled), one terminal result per job (late completions discarded) and nothing left started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest
from cluster import FAST_WORKER, Cluster, Host
from harness import conversation_rows, conversations, dump, wait_done, wait_until, wip_and_claims

pytestmark = pytest.mark.slow

N = 300  # jobs per scenario: about 1.5 s of work for two hosts at 5 ms per database round trip


def _attempts(conn: Any, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"rq:job:{job_id}", "slimyq_attempts")
    return {i: json.loads(raw) if raw else [] for i, raw in zip(ids, pipe.execute(), strict=True)}


def _on(host: Host, worker: str | None) -> bool:
    return bool(worker) and any(str(worker).startswith(p) for p in host.worker_names_prefix())


def _running_on(fleet: Cluster, host: Host) -> int:
    """How many jobs the started registry holds for ``host``'s workers right now."""
    conn = fleet.conn()
    members = [m.decode() for m in conn.zrange("rq:wip:database", 0, -1)]  # type: ignore[union-attr]
    pipe = conn.pipeline(transaction=False)
    for m in members:
        pipe.hget(f"rq:job:{m.rpartition(':')[0]}", "worker_name")
    return sum(_on(host, (w or b"").decode()) for w in pipe.execute())


def _start(fleet: Cluster, **kw: Any) -> tuple[Host, Host]:
    a, b = fleet.hosts[:2]
    a.worker("database", "--log-level", "info", **kw)
    b.worker("database", "--log-level", "info")
    return a, b


def _busy(fleet: Cluster) -> tuple[Host, list[str]]:
    """Both hosts working through N jobs, host 0 running some of them right now."""
    a, _b = _start(fleet)
    ids = conversations(fleet.env, N)
    wait_until(lambda: _running_on(fleet, a) > 0, 60, 0.02, "jobs running on host 0")
    return a, ids


def _assert_exact(fleet: Cluster, ids: list[str], pg_url: str, timeout: float = 150) -> None:
    conn = fleet.conn()
    t = wait_done(conn, ids, timeout)
    logs = "\n".join(h.log()[-3000:] for h in fleet.hosts)
    counts = (t.finished, t.failed, t.pending, t.duplicated)
    failed = [v for v in _attempts(conn, ids).values() if v and v[-1].get("outcome") != "finished"][:3]
    assert counts == (len(ids), 0, 0, 0), f"{t}\n{failed}\n{dump(conn, t.missing)}\n{logs}"
    assert conversation_rows(pg_url) == len(ids)
    wait_until(lambda: not wip_and_claims(conn, ["database"]), 30, what="nothing left started")


def _taken_over(fleet: Cluster, ids: list[str], victim: Host) -> list[str]:
    """Jobs that have an abandoned attempt; each must have finished on another host."""
    recs = _attempts(fleet.conn(), ids)
    taken = [i for i, a in recs.items() if any(r.get("outcome") == "abandoned" for r in a)]
    for i in taken:
        ok = [r for r in recs[i] if r.get("outcome") == "finished"]
        assert len(ok) == 1 and not _on(victim, ok[0].get("worker")), recs[i]
    return taken


def test_partition_from_redis_and_database_then_heal(fleet: Cluster, module_pg_url: str) -> None:
    a, ids = _busy(fleet)
    a.cut(redis=True, db=True)
    # Longer than abandoned_after (3 s) plus a maintenance pass (5 s): host 1 takes the jobs over.
    time.sleep(10)
    a.heal()
    _assert_exact(fleet, ids, module_pg_url)
    assert _taken_over(fleet, ids, a), "no job of the partitioned host was rerun elsewhere"
    assert a.procs[0].poll() is None, a.log()[-3000:]  # the partitioned host came back, still running
    more = conversations(fleet.env, 50, user="u2")
    _assert_exact(fleet, ids + more, module_pg_url)


def test_partition_from_database_only_burns_no_attempts(fleet: Cluster, module_pg_url: str) -> None:
    # One attempt only: a job that met the outage and counted it would fail.
    fleet.reconfigure(worker=FAST_WORKER, queues={"database": {"attempts": 1, "timeout": 15}})
    a, ids = _busy(fleet)
    a.cut(redis=False, db=True)
    # Longer than the job timeout (15 s): a job whose reply never comes must fail as "database
    # unavailable" (TCP keepalives and user timeout on the connection), not hang until its timeout
    # and count an attempt.
    time.sleep(20)
    a.heal()
    _assert_exact(fleet, ids, module_pg_url)
    recs = _attempts(fleet.conn(), ids)
    odd = {i: v for i, v in recs.items() if [r.get("outcome") for r in v if "tries" not in r] != ["finished"]}
    assert not odd, list(odd.items())[:3]
    waited = [v for v in recs.values() if any(r.get("errorType") == "database_unavailable" for r in v)]
    assert waited, "no job met the partition"
    assert all(_on(a, r["worker"]) for v in waited for r in v if "tries" in r)


def test_host_killed_mid_batch(fleet: Cluster, module_pg_url: str) -> None:
    a, ids = _busy(fleet)
    assert a.kill() >= 2  # the supervisor and its queue process
    assert not a.pids()
    _assert_exact(fleet, ids, module_pg_url)
    assert _taken_over(fleet, ids, a), "the dead host's jobs were not rerun elsewhere"


def test_host_frozen_then_resumed(fleet: Cluster, module_pg_url: str) -> None:
    a, ids = _busy(fleet)
    assert a.freeze() >= 2
    time.sleep(10)
    a.thaw()
    _assert_exact(fleet, ids, module_pg_url)
    assert _taken_over(fleet, ids, a), "the frozen host's jobs were not rerun elsewhere"
    assert a.procs[0].poll() is None, a.log()[-3000:]


def _clock_of(host: Host) -> tuple[float, float, float]:
    """(real time before, ``time.time()`` of a Python started in ``host`` with the environment of
    its running supervisor, real time after)."""
    supervisor = psutil.Process(host.procs[0].pid)

    def execd() -> bool:
        # Until ``ip netns exec`` has exec'd the worker, the pid is ``ip`` (whose command line names
        # slimyq too), and its environment may read empty while the exec replaces it.
        cmd = supervisor.cmdline()
        return bool(cmd) and os.path.basename(cmd[0]) != "ip" and any("slimyq" in part for part in cmd)

    wait_until(execd, 30, 0.02, "the worker's supervisor started")
    env = supervisor.environ()
    before = time.time()
    probe = "import time; print(repr(time.time()))"
    done = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", probe],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    return before, float(done.stdout), time.time()


@pytest.mark.parametrize("skew", [4.0, -4.0])
def test_clock_skew_on_one_host(fleet: Cluster, module_pg_url: str, skew: float) -> None:
    """A host whose wall clock is 4 s off (more than abandoned_after) takes no job from a live host:
    recovery needs the owner's worker key to have expired in Redis, which no clock affects."""
    a, b = _start(fleet, clock_skew=skew)
    # The skew is live where the worker runs: its interpreter, in its namespace, with its environment.
    before, seen, after = _clock_of(a)
    assert before + skew <= seen <= after + skew, (before, seen, after)
    before, seen, after = _clock_of(b)
    assert before <= seen <= after, (before, seen, after)  # the other host's clock is the real one
    ids = conversations(fleet.env, N)
    _assert_exact(fleet, ids, module_pg_url)
    recs = _attempts(fleet.conn(), ids)
    assert not [i for i, v in recs.items() if any(r.get("outcome") == "abandoned" for r in v)]
    workers = {r.get("worker", "") for v in recs.values() for r in v}
    assert any(_on(a, w) for w in workers) and any(_on(b, w) for w in workers)  # both hosts worked
