"""The harness's cleanup and its lock: everything it starts goes, as after a crashed run, and two
runs on one machine take turns. Its own module, so that no cluster fixture is alive while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
from cluster import DB_IP, PREFIX, REDIS_IP, LockTimeout, cleanup, exclusive, netns_pids
from harness import wait_until

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# A harness run as the bench makes it (Valkey, the database proxy, a host with a delaying Redis
# proxy and a worker, the chat stub), which reports its processes and then waits to be killed.
LEAKER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bench_cluster, cluster
c = cluster.Cluster(Path(sys.argv[2]), sys.argv[3])
(host,) = c.add_hosts(1)
host.environ(redis_delay_ms=2)
stub = bench_cluster._stub(c)
host.worker("database", "--log-level", "warning")
print(json.dumps({"valkey": c.valkey.pid, "db proxy": c.db_proxy.proc.pid, "redis proxy": host.redis_proxy.proc.pid,
                  "chat stub": stub.pid, "worker": host.procs[0].pid}), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _listening_on_harness_addresses() -> list[int]:
    return [c.pid or 0 for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip in (REDIS_IP, DB_IP)]


def _assert_no_names_left() -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert PREFIX not in listed and PREFIX not in links


def test_cleanup_removes_leftovers_of_a_crashed_run(netns: None) -> None:
    """A stray namespace with a process in it and a stray link, as a killed test run leaves them."""
    ns, link = f"{PREFIX}-stray", f"{PREFIX}strayA"
    with exclusive():  # no other harness run is using the names meanwhile
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", f"{PREFIX}strayB"], check=True)
        sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "300"])
        wait_until(lambda: netns_pids(ns), 5, what="the sleeper inside the namespace")
        assert netns_pids(ns) == [sleeper.pid]
        cleanup()
        assert sleeper.wait(10) == -9
        _assert_no_names_left()


def test_cleanup_after_a_sigkilled_run_kills_its_valkey_proxies_and_stub(
        netns: None, module_pg_url: str, tmp_path: Path) -> None:
    run = subprocess.Popen([sys.executable, "-c", LEAKER, str(SCRIPTS), str(tmp_path / "run"), module_pg_url],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
        assert line, f"the harness run did not start (exit {run.poll()})"
        pids: dict[str, int] = json.loads(line)
        wait_until(lambda: pids["worker"] in netns_pids(f"{PREFIX}-h0"), 30, what="the worker in its namespace")
    finally:
        os.kill(run.pid, signal.SIGKILL)  # no finally, no atexit: what a crash leaves
        run.wait(10)
    leaked = {what: pid for what, pid in pids.items() if _alive(pid)}
    assert leaked == pids  # the run's own processes outlive it: there is something to clean up
    assert _listening_on_harness_addresses()

    cleanup(timeout=30)  # the killed run's lock died with it: no wait

    wait_until(lambda: not any(_alive(pid) for pid in pids.values()), 15, what="every leftover process gone")
    assert not _listening_on_harness_addresses()
    _assert_no_names_left()


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import cluster
with cluster.exclusive():
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_run_waits_for_the_lock_then_fails_clearly(netns: None) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(SCRIPTS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match=rf"another multi-host harness run \(pid {holder.pid}\)"):
            cleanup(timeout=0.5)  # nothing of the holder's run is touched
        assert holder.poll() is None
    finally:
        holder.stdin.close()  # the holder lets go
        assert holder.wait(10) == 0
    with exclusive(timeout=30):
        pass


def test_the_bench_drops_its_own_leftover_databases_only(netns: None) -> None:
    import bench_cluster

    admin = bench_cluster.PG_ADMIN
    mine = f"{bench_cluster.DB_PREFIX}{uuid.uuid4().hex[:10]}"
    other = f"slimyq_bench_{uuid.uuid4().hex[:10]}"  # scripts/bench_audit.py's pattern: not ours
    with psycopg.connect(admin, autocommit=True) as a:
        for name in (mine, other):
            a.execute(f'CREATE DATABASE "{name}"')
    try:
        with exclusive():
            dropped = bench_cluster.drop_leftover_databases(admin)
        assert mine in dropped and other not in dropped
        with psycopg.connect(admin, autocommit=True) as a:
            left = {r[0] for r in a.execute("SELECT datname FROM pg_database").fetchall()}
        assert mine not in left and other in left
    finally:
        with psycopg.connect(admin, autocommit=True) as a:
            for name in (mine, other):
                a.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
