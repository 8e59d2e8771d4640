"""The harness's cleanup: everything with its prefix goes, as after a crashed run. Its own module,
so that no cluster fixture is alive while it runs."""

from __future__ import annotations

import subprocess
import time

import pytest
from cluster import PREFIX, cleanup, netns_pids, unavailable

pytestmark = pytest.mark.slow


def test_cleanup_removes_leftovers_of_a_crashed_run() -> None:
    """A stray namespace with a process in it and a stray link, as a killed test run leaves them."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    ns, link = f"{PREFIX}-stray", f"{PREFIX}strayA"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", f"{PREFIX}strayB"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "300"])
    for _ in range(50):
        if netns_pids(ns):
            break
        time.sleep(0.1)
    assert netns_pids(ns) == [sleeper.pid]
    cleanup()
    assert sleeper.wait(10) == -9
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert PREFIX not in listed and PREFIX not in links
