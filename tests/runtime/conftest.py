"""Fixtures for the reliability tests: real ``slimyq worker`` processes on a private Valkey.

``env`` is a clean Redis database (the session's private Valkey), a SQLite file and a config file
with short timings (heartbeat 0.5 s, abandoned_after 3 s, shutdown_grace 5 s, backoff 0.5 s).
``start`` launches ``slimyq worker ARGS`` as a subprocess in its own session and kills whatever
is left of it at the end of the test. Helpers live in ``harness.py`` (shared with
``scripts/faults.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))

from harness import Env, Valkey, WorkerProc

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> Env:
    return Env.make(tmp_path / "rt", redis_url)


@pytest.fixture
def conn(env: Env) -> Iterator[redis.Redis]:
    c = env.conn()
    yield c
    c.close()


@pytest.fixture
def start(env: Env) -> Iterator[Callable[..., WorkerProc]]:
    procs: list[WorkerProc] = []

    def run(*args: str, on: Env | None = None) -> WorkerProc:
        proc = (on or env).worker(*args)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def private_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    """A Valkey of this module's own (AOF, appendfsync always) that tests may stop and restart."""
    server = Valkey(tmp_path_factory.mktemp("valkey-private"))
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture(autouse=True)
def _fresh_undeferred(monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobs a failed write of markers left undeferred are this process's memory: each test
    starts without another test's."""
    from slimyq.runtime import batch

    monkeypatch.setattr(batch, "_undeferred", batch._Undeferred())
