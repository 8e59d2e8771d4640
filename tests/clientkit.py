"""Helpers of the Python API tests: a config file in the test's working directory, real worker
processes, and the job package of ``tests/jobpkg`` on the path of the processes they start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

JOBPKG = Path(__file__).resolve().parent / "jobpkg"

CONFIG = """
history = true
jobs = {jobs}

[worker]
heartbeat = 0.5
abandoned_after = 3.0
shutdown_grace = 5.0

[rate_limit]
requests = 3
window = 60

[queues.audit]
concurrency = 2
timeout = 30
attempts = 2
backoff_base = 0.2

[queues.database]
concurrency = 4
timeout = 30
attempts = 2
backoff_base = 0.2
"""


def write_config(cwd: Path, jobs: list[str] | None = None, name: str = "slimyq.toml") -> Path:
    """``./slimyq.toml``: found by the CLI, the workers and ``Client()`` alike."""
    path = cwd / name
    path.write_text(CONFIG.format(jobs="[" + ", ".join(f'"{m}"' for m in jobs or []) + "]"))
    return path


def environ(with_jobpkg: bool = False, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120", "PYTHONUNBUFFERED": "1", **extra}
    if with_jobpkg:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(JOBPKG), env.get("PYTHONPATH", "")) if p)
    return env


def slimyq(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``slimyq ARGS`` as a real process in the current working directory."""
    return subprocess.run([sys.executable, "-m", "slimyq", *args], env=env or environ(), capture_output=True,
                          text=True, timeout=timeout)


def burst(*queues: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A real worker that runs what is queued (and due) on ``queues`` and exits."""
    done = slimyq("worker", *queues, "--burst", env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done
