"""Fixtures for the multi-host tests: worker hosts as network namespaces (``scripts/cluster.py``)
against a private Valkey and a private PostgreSQL database reached over veth addresses.

Network namespaces need root: without them these tests skip, except on CI (``CI=true``), where a
missing capability is a failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

import cluster as cluster_mod  # noqa: E402

pytestmark = pytest.mark.slow
ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

WORKER, QUEUES = cluster_mod.FAST_WORKER, cluster_mod.FAST_QUEUES


@pytest.fixture(scope="session")
def netns() -> None:
    """Network namespaces can be made here: otherwise skip, or fail on CI."""
    reason = cluster_mod.unavailable()
    if reason:
        if ON_CI:
            pytest.fail(f"{reason} (CI=true: the multi-host tests must run)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(netns: None, module_pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster_mod.Cluster]:
    # Every database round trip takes 5 ms more: jobs are in flight when a fault lands.
    c = cluster_mod.Cluster(tmp_path_factory.mktemp("cluster"), module_pg_url, db_delay_ms=5.0, worker=WORKER,
                           queues=QUEUES)
    c.add_hosts(2)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def fleet(cluster: cluster_mod.Cluster, module_pg_url: str) -> Iterator[cluster_mod.Cluster]:
    """The module's cluster, emptied: no workers running, Redis flushed, tables emptied."""
    from slimyq.db import connect_url, table_names

    cluster.reset()
    cluster.reconfigure(worker=WORKER, queues=QUEUES)
    db = connect_url(module_pg_url)
    try:
        with db.atomic():
            for table in table_names():
                db.execute_sql(f"DELETE FROM {table}")  # type: ignore[no-untyped-call]
    finally:
        db.close()
    yield cluster
    cluster.reset()
