"""A bulk enqueue stopped by a real signal in a real process (no terminal): it says how many jobs are
queued, `stats` agrees, and the command it prints enqueues the rest, none twice."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib

BIN = Path(sys.executable).parent
LINES = 40_000

pytestmark = pytest.mark.slow


def _env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "REDIS_URL": redis_url,
            "SLIMYQ_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "NO_COLOR": "1", "COLUMNS": "120"}


def _wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_bulk_enqueue_reports_and_resumes(redis_url: str, r: redis_lib.Redis, tmp_path: Path,
                                                     signum: int) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"type": "canary", "queue": "database", "payload": {}})
    path.write_text((line + "\n") * LINES)
    env = _env(redis_url, tmp_path)
    proc = subprocess.Popen(["slimyq", "enqueue", "--file", str(path)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_until(lambda: r.llen("rq:queue:database") > 0 or proc.poll() is not None)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out == ""
    [message] = err.splitlines()
    found = re.fullmatch(rf"error: interrupted: ([\d,]+) of 40,000 jobs enqueued \(0 already existed\) through line "
                         rf"([\d,]+) of {re.escape(str(path))}; continue with: (.*)", message)
    assert found, message
    done, through = (int(found.group(i).replace(",", "")) for i in (1, 2))
    assert 0 < done < LINES and done == through
    assert r.llen("rq:queue:database") == done  # no chunk half-sent: the count is exact

    stats = subprocess.run(["slimyq", "stats", "database", "--json"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(stats.stdout)[0]["queued"] == done

    command = found.group(3)
    assert command == f"slimyq enqueue --file {shlex.quote(str(path))} --resume {command.rsplit(' ', 1)[1]}"
    rest = subprocess.run(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300, start_new_session=True)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout == f"enqueued {LINES - done:,} jobs (0 already existed)\n"
    ids = [x.decode() for x in r.lrange("rq:queue:database", 0, -1)]
    assert len(ids) == LINES and len(set(ids)) == LINES
