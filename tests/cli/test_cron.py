"""What cron sees is what is tested: the README's cron lines, run as cron runs them.

Each line is taken from the README's ``cron`` block (schedule fields dropped) and run by
``/bin/sh -c`` in a real process with no terminal (stdin from /dev/null, stdout and stderr pipes,
a new session so there is no controlling terminal). The rule: silent on success, errors one line
on stderr, the exit code tells the outcome; a summary on a terminal or with ``-v``.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis as redis_lib

from slimyq.db import AuditLog, connect_url, database_proxy, migrate

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent


def cron_lines() -> list[str]:
    """The commands of the README's cron block, exactly as written there (schedule fields dropped)."""
    block = re.search(r"```cron\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README has no ```cron block"
    lines = [x for x in block.group(1).splitlines() if x.strip() and not x.lstrip().startswith("#")]
    return [x.split(None, 5)[5] for x in lines]


@pytest.fixture
def cron_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """A cron-like environment: a minimal PATH with slimyq on it, our Valkey and a migrated SQLite."""
    db_url = f"sqlite:///{tmp_path / 'cron.sqlite3'}"
    database = connect_url(db_url)
    migrate(database)
    database_proxy.initialize(database)
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=400)
    for _ in range(3):
        AuditLog.insert(id=str(uuid.uuid4()), timestamp=old, action="login", user_id="u1",
                        resource_type="session", resource_id="r1", success=True).execute()
    database.close()
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "REDIS_URL": redis_url, "DATABASE_URL": db_url, "SLIMYQ_DATA_DIR": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def run_as_cron(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", line], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, start_new_session=True, timeout=120)


def test_readme_has_the_three_cron_lines() -> None:
    assert cron_lines() == ["slimyq audit cleanup --days 90", "slimyq history prune --days 30",
                            'slimyq check --max-age 10m || logger -t slimyq "unhealthy"']


@pytest.mark.parametrize("line", cron_lines())
def test_readme_cron_line_is_silent_on_success(line: str, cron_env: dict[str, str]) -> None:
    proc = run_as_cron(line, cron_env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_cleanup_did_its_work_silently(cron_env: dict[str, str]) -> None:
    proc = run_as_cron("slimyq audit cleanup --days 90", cron_env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    again = run_as_cron("slimyq audit cleanup --days 90 --dry-run", cron_env)
    assert again.returncode == 0 and again.stdout.startswith("would delete 0 audit entries")


def test_verbose_prints_the_summary(cron_env: dict[str, str]) -> None:
    proc = run_as_cron("slimyq audit cleanup --days 90 -v", cron_env)
    assert proc.returncode == 0 and proc.stderr == ""
    assert re.fullmatch(r"deleted 3 audit entries older than \S+\n", proc.stdout)
    pruned = run_as_cron("slimyq history prune --days 30 --verbose", cron_env)
    assert re.fullmatch(r"deleted 0 job history rows older than \S+\n", pruned.stdout)
    check = run_as_cron("slimyq check --max-age 10m -v", cron_env)
    assert check.returncode == 0 and check.stdout.splitlines()[-1] == "healthy: 3 queues, 0 live workers"


def test_a_terminal_gets_the_summary(cron_env: dict[str, str], on_tty) -> None:
    code, shown, _ = on_tty(["slimyq", "history", "prune", "--days", "30"], cron_env)
    assert code == 0
    assert "deleted 0 job history rows older than" in shown


def test_an_error_is_one_line_on_stderr(cron_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cron_env, "DATABASE_URL": "postgresql://nobody:pw-secret@127.0.0.1:1/none"}
    proc = run_as_cron("slimyq audit cleanup --days 90", env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "pw-secret" not in proc.stderr


def test_unhealthy_check_is_one_line_per_problem_on_stderr(cron_env: dict[str, str], r: redis_lib.Redis) -> None:
    r.rpush("rq:queue:database", "j1")
    r.hset("rq:job:j1", mapping={"status": "queued", "enqueued_at": "2020-01-01T00:00:00.000000Z"})
    r.sadd("rq:queues", "rq:queue:database")
    proc = run_as_cron("slimyq check --max-age 10m", cron_env)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert "error: queue database has 1 job queued but no live worker (start: slimyq worker database)" in lines
    assert any(x.startswith("error: queue database: oldest queued job waited") for x in lines)
    assert all(x.startswith(("error: ", "warning: ")) for x in lines)
