"""The multi-host harness itself: each fault cuts what it names and nothing else, signals reach
every process of a host's namespace, a delayed host's Redis traffic goes through its proxy."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from cluster import DB_IP, REDIS_IP, Cluster, Host
from harness import wait_until

pytestmark = pytest.mark.slow

PROBE = """
import socket, sys
for addr in sys.argv[1:]:
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        print("ok", end=" ")
    except OSError:
        print("cut", end=" ")
"""


def _reach(cluster: Cluster, host: Host) -> list[str]:
    """From inside ``host``: can it open a TCP connection to Redis, to the database proxy?"""
    done = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", PROBE,
                           f"{REDIS_IP}:{cluster.redis_port}", f"{DB_IP}:{cluster.db_port}"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.split()


def _status(pid: int) -> str:
    return str(psutil.Process(pid).status())


def test_cut_heal_and_link(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    assert _reach(cluster, host) == ["ok", "ok"]
    host.cut(redis=True, db=False)
    assert _reach(cluster, host) == ["cut", "ok"]
    host.heal()
    host.cut(redis=False, db=True)
    assert _reach(cluster, host) == ["ok", "cut"]
    assert _reach(cluster, cluster.hosts[1]) == ["ok", "ok"]  # the other host is untouched
    host.heal()
    host.link_down()
    assert _reach(cluster, host) == ["cut", "cut"]
    host.link_up()
    assert _reach(cluster, host) == ["ok", "ok"]


def test_freeze_thaw_and_kill_reach_every_process_of_the_namespace(cluster: Cluster) -> None:
    host = cluster.hosts[1]
    env = dict(os.environ)
    procs = [host.run(["sleep", "300"], env, "sleep") for _ in range(2)]
    pids = {p.pid for p in procs}
    # `ip netns exec` enters the namespace just before it execs the command: wait for that.
    wait_until(lambda: pids <= set(host.pids()), 10, what="both processes inside the namespace")
    assert host.freeze() >= 2
    wait_until(lambda: all(_status(pid) == psutil.STATUS_STOPPED for pid in pids), 10, what="stopped")
    host.thaw()
    wait_until(lambda: all(_status(pid) != psutil.STATUS_STOPPED for pid in pids), 10, what="running")
    host.kill()
    assert not host.pids()
    assert all(p.poll() is not None for p in procs)


def test_a_delayed_host_reaches_redis_through_its_proxy(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    env = host.environ(redis_delay_ms=2)
    assert host.redis_proxy is not None and env["REDIS_URL"] == f"redis://{host.redis_proxy.listen}/0"
    ping = ("import redis, sys; r = redis.Redis.from_url(sys.argv[1]); "
            "print(r.ping(), r.set('slimyq-harness', 'x'), r.get('slimyq-harness').decode())")
    done = subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", ping, env["REDIS_URL"]],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["True", "True", "x"], done.stderr
