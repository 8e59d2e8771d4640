"""`slimyq --help` stays fast: it must not import rq, peewee or openai."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from slimyq.cli import main
sys.argv = ["slimyq", "--help"]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("rq", "peewee", "openai", "redis", "psycopg", "pymysql") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_help_imports_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert "HEAVY=\n" in out or out.rstrip().endswith("HEAVY="), out[-300:]


def test_python_dash_m_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "slimyq", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "worker" in proc.stdout and "enqueue" in proc.stdout


READ_PROBE = """
import gc, sys
from slimyq.cli import main
sys.argv = ["slimyq", "config", "show", "--json"]
try:
    main()
except SystemExit:
    pass
groups = sorted(m for m in ("slimyq.cli.audit", "slimyq.cli.history", "slimyq.cli.dbcmd", "slimyq.cli.jobcmd",
                            "slimyq.jobs.registry") if m in sys.modules)
print("FROZEN=" + str(gc.get_freeze_count() > 0), "GROUPS=" + ",".join(groups))
"""


def test_console_entry_freezes_start_up_and_builds_only_the_invoked_group(tmp_path) -> None:
    """`main()` moves start-up's objects to the permanent generation; a command imports its own
    group only (config here), never the others nor the job registry it does not need."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SLIMYQ_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", READ_PROBE], capture_output=True, text=True, check=True, env=env,
                         cwd=tmp_path).stdout
    assert "FROZEN=True GROUPS=\n" in out, out[-300:]


def test_library_and_cli_runner_never_freeze() -> None:
    """Only the console entry point freezes: a library user's or a test's process is left alone."""
    probe = """
import gc
from typer.testing import CliRunner
from slimyq.cli import app
CliRunner().invoke(app, ["config", "show", "--json"])
from slimyq import _startup
_startup.settled()
print("FROZEN=" + str(gc.get_freeze_count()))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("FROZEN=0"), out[-300:]


def test_each_lazy_group_stub_matches_its_real_group() -> None:
    """The root lists each lazy group with the help its real group shows, and the real group has
    the same commands whether built lazily or asked for by name."""
    import typer.main

    from slimyq.cli import app
    from slimyq.cli._group import GROUP_HELP, LAZY_GROUPS, load_lazy

    root = typer.main.get_command(app)
    for name in LAZY_GROUPS:
        real = load_lazy(name)
        assert root.commands[name].help == GROUP_HELP[name]
        assert real.commands, name
        if name != "enqueue":  # its real group's help is the bulk-file text
            assert real.help == GROUP_HELP[name]


def test_shell_completion_is_quiet_when_a_job_module_does_not_import(tmp_path: Path) -> None:
    env = {**os.environ, "SLIMYQ_DATA_DIR": str(tmp_path), "_SLIMYQ_COMPLETE": "complete_bash",
           "COMP_WORDS": "slimyq enqueue ", "COMP_CWORD": "2", "NO_COLOR": "1", "COLUMNS": "120"}
    broken = subprocess.run([sys.executable, "-m", "slimyq"], env={**env, "SLIMYQ_JOBS": "no_such_team_module"},
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode == 0 and broken.stderr == "" and broken.stdout.strip() == "", broken.stderr
    fine = subprocess.run([sys.executable, "-m", "slimyq"], env={**env, "COMP_WORDS": "slimyq enqueue cre"},
                          capture_output=True, text=True, timeout=60)
    assert fine.returncode == 0 and "create-conversation" in fine.stdout.split(), fine.stderr


STATS_PROBE = """
import sys
from slimyq.cli import main
from slimyq import _skip_otel
sys.argv = ["slimyq", "stats", "--json"]
try:
    main()
except SystemExit:
    pass
import redis.observability.providers
print("SDK=" + str("opentelemetry.sdk.metrics" in sys.modules), "FINDER=" + str(_skip_otel._finder in sys.meta_path),
      "ADAPTERS=" + str("typer._adapters" in sys.modules))
import opentelemetry.sdk.metrics  # importable as ever, once redis-py has been imported
print("LATER=" + opentelemetry.sdk.metrics.MeterProvider.__name__)
"""


def test_a_read_command_skips_redis_pys_unused_import_of_the_otel_metrics_sdk(redis_url: str, tmp_path: Path) -> None:
    """`slimyq stats` imports redis-py without OpenTelemetry's metrics SDK (nothing of redis-py
    uses what that import binds); the finder is gone afterwards and the SDK imports as usual. And
    Typer builds no pydantic adapter: every value is None, a flag or the command's own default."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    env = {**os.environ, "REDIS_URL": redis_url, "SLIMYQ_DATA_DIR": str(tmp_path), "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-c", STATS_PROBE], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"queue": "database"' in proc.stdout
    assert "SDK=False FINDER=False ADAPTERS=False\nLATER=MeterProvider\n" in proc.stdout, proc.stdout[-300:]


def test_the_otel_skip_refuses_redis_py_alone() -> None:
    """While installed, the finder refuses the SDK to ``redis.observability.providers`` only:
    another importer (slimyq's tracing, a job) gets the real module."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    probe = """
import sys
from slimyq import _skip_otel
_skip_otel.install()
import opentelemetry.sdk.metrics
print("OTHER=" + opentelemetry.sdk.metrics.MeterProvider.__name__, "FINDER=" + str(_skip_otel._finder in sys.meta_path))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "OTHER=MeterProvider FINDER=True", out[-300:]


def test_library_imports_of_redis_are_left_alone() -> None:
    """Without the console entry point, redis-py imports exactly what it always did."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    probe = """
import sys
import slimyq.client, redis
print("SDK=" + str("opentelemetry.sdk.metrics" in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "SDK=True", out[-300:]
