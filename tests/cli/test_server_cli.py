"""`slimyq server start|status|stop`, and how an unreachable Redis meets the user."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import typer
from typer.testing import CliRunner, Result

from slimyq import server
from slimyq.config import load_settings

Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def stop_embedded() -> Iterator[None]:
    """Whatever server a test starts in its data dir is stopped at the end."""
    yield
    settings = load_settings().settings
    server.stop(settings)
    sock = str(server.paths(settings).socket)
    for proc in psutil.process_iter(["name", "cmdline"]):
        if "valkey" in (proc.info["name"] or "") and sock in " ".join(proc.info["cmdline"] or []):
            os.kill(proc.pid, signal.SIGKILL)


def test_start_status_stop(cli: Cli) -> None:
    result = cli("server", "status")
    assert result.exit_code == 1
    assert "running" in result.stdout and "no" in result.stdout
    assert result.stderr == ""

    result = cli("server", "start")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("embedded valkey started: pid ")
    assert "valkey.sock" in result.stdout

    result = cli("server", "start")
    assert result.exit_code == 0
    assert result.stdout.startswith("embedded valkey already running: pid ")

    result = cli("server", "status", "--json")
    assert result.exit_code == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["running"] is True and state["aof_enabled"] is True
    assert isinstance(state["pid"], int) and state["socket"].endswith("valkey/valkey.sock")
    fields = "running pid socket data_dir version uptime_seconds used_memory_human aof_enabled"
    assert set(state) == set(fields.split())

    result = cli("server", "status")
    assert result.exit_code == 0
    assert "version" in result.stdout and "yes" in result.stdout

    result = cli("server", "stop")
    assert result.exit_code == 0
    assert result.stdout == f"embedded valkey stopped (pid {state['pid']})\n"

    result = cli("server", "stop")
    assert result.exit_code == 0
    assert result.stdout == "embedded valkey is not running\n"

    result = cli("server", "status", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["running"] is False


def test_start_and_stop_as_json(cli: Cli) -> None:
    result = cli("server", "start", "--json")
    assert result.exit_code == 0, result.stderr
    started = json.loads(result.stdout)
    assert started["running"] is True
    result = cli("server", "stop", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "was_running": True,
        "pid": started["pid"],
        "socket": started["socket"],
    }


def test_start_with_redis_url_is_a_usage_error(cli: Cli, isolated_env: Path) -> None:
    result = cli("server", "start", env={"REDIS_URL": "redis://:secretpw@127.0.0.1:1/0"})
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "REDIS_URL" in result.stderr and "secretpw" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (isolated_env / "data" / "valkey").exists()


def test_server_help_lists_the_commands(cli: Cli) -> None:
    result = cli("server", "--help")
    assert result.exit_code == 0
    for name in ("start", "status", "stop"):
        assert name in result.stdout
    assert "The embedded Valkey server" in result.stdout


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    """Any command that needs Redis (here a probe command on the real error edge) reports it so."""
    from slimyq.app import App
    from slimyq.cli._group import SlimyqGroup
    from slimyq.cli._options import app_of

    probe = typer.Typer(cls=SlimyqGroup)

    @probe.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = App()

    @probe.command()
    def ping(ctx: typer.Context) -> None:
        app_of(ctx).redis.ping()

    env = {"REDIS_URL": "redis://:secretpw@127.0.0.1:1/0", "NO_COLOR": "1"}
    result = CliRunner().invoke(probe, ["ping"], env=env, catch_exceptions=False)
    assert result.exit_code == 1
    assert "secretpw" not in result.output
    assert result.stderr == (
        "error: cannot reach Redis at redis://:***@127.0.0.1:1/0 (connection refused); start it or set REDIS_URL\n"
    )
