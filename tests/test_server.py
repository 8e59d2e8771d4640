"""The embedded Valkey server: start, status, stop, concurrency, recovery, persistence, failures."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis as redis_lib

from slimyq import server
from slimyq.config import Settings, load_settings
from slimyq.errors import ConfigError, SlimyqError, UsageError


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _valkeys_on(sock: Path) -> list[int]:
    """Live valkey processes serving this socket (the proc title names it)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        serving = str(sock) in " ".join(info["cmdline"] or [])
        if "valkey" in (info["name"] or "") and info["status"] != psutil.STATUS_ZOMBIE and serving:
            found.append(proc.pid)
    return found


@pytest.fixture
def settings() -> Iterator[Settings]:
    """Settings for this test's data dir; whatever server the test started is stopped afterwards."""
    loaded = load_settings().settings
    yield loaded
    try:
        server.stop(loaded)
    finally:
        for pid in _valkeys_on(server.paths(loaded).socket):  # belt and braces: never leak a server
            os.kill(pid, signal.SIGKILL)


def test_start_status_stop(settings: Settings) -> None:
    where = server.paths(settings)
    assert server.status(settings).running is False
    assert not where.root.exists()  # status creates nothing

    state = server.start(settings)
    assert state.running and state.pid and state.aof_enabled is True
    assert state.socket == where.socket == settings.data_dir / "valkey" / "valkey.sock"
    assert state.version and state.version[0].isdigit()
    assert state.uptime_seconds is not None and state.used_memory_human
    assert stat.S_ISSOCK(where.socket.stat().st_mode)
    assert stat.S_IMODE(where.socket.stat().st_mode) == 0o700
    assert where.pidfile.read_text().strip() == str(state.pid)
    assert where.log.is_file() and (where.root / "appendonlydir").is_dir()
    proc = psutil.Process(state.pid)
    assert proc.ppid() != os.getpid()  # daemonized: not our child

    conn = redis_lib.Redis(unix_socket_path=str(where.socket))
    assert conn.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert conn.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert conn.config_get("port") == {"port": "0"}
    conn.close()

    assert server.start(settings).pid == state.pid  # already running: same server
    assert server.stop(settings) is True
    assert _gone(state.pid)
    assert not where.socket.exists() and not where.pidfile.exists()
    assert server.status(settings).running is False
    assert server.stop(settings) is False


def test_server_outlives_the_command_that_started_it(settings: Settings) -> None:
    code = "from slimyq.config import load_settings; from slimyq.server import ensure_running; "
    code += "print(ensure_running(load_settings().settings))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(server.paths(settings).socket)
    state = server.status(settings)
    assert state.running and state.pid


def test_threads_starting_at_once_start_one_server(settings: Settings) -> None:
    barrier = threading.Barrier(6)
    sockets: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            sockets.append(server.ensure_running(settings))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(sockets)) == 1 and len(sockets) == 6
    where = server.paths(settings)
    assert where.log.read_text().count("just started") == 1
    assert len(_valkeys_on(where.socket)) == 1


def test_processes_starting_at_once_start_one_server(settings: Settings) -> None:
    code = (
        "import redis; from slimyq.config import load_settings; from slimyq.server import ensure_running; "
        "s = ensure_running(load_settings().settings); "
        "print(redis.Redis(unix_socket_path=str(s)).info('server')['process_id'])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    pids = {out.strip() for out, _ in outputs}
    assert len(pids) == 1
    assert server.paths(settings).log.read_text().count("just started") == 1


def test_stale_pid_file_is_recovered(settings: Settings) -> None:
    where = server.paths(settings)
    where.root.mkdir(parents=True)
    where.pidfile.write_text(f"{os.getpid()}\n")  # a live pid, but not a valkey: recycled
    state = server.start(settings)
    assert state.running and state.pid != os.getpid()
    assert where.pidfile.read_text().strip() == str(state.pid)


def test_stale_socket_file_is_recovered(settings: Settings) -> None:
    where = server.paths(settings)
    where.root.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
        leftover.bind(str(where.socket))  # the file stays, nothing listens
    assert where.socket.exists()
    assert server.ensure_running(settings) == where.socket
    assert server.status(settings).running


def test_crashed_server_is_replaced(settings: Settings) -> None:
    first = server.start(settings)
    assert first.pid
    os.kill(first.pid, signal.SIGKILL)
    assert _gone(first.pid)
    assert server.paths(settings).pidfile.exists()  # left behind by the crash
    second = server.start(settings)
    assert second.running and second.pid != first.pid


def test_server_gone_deaf_is_reported_and_stop_ends_it(settings: Settings) -> None:
    state = server.start(settings)
    assert state.pid
    server.paths(settings).socket.unlink()  # alive, but nobody can reach it
    with pytest.raises(SlimyqError, match="running but not answering"):
        server.ensure_running(settings)
    assert server.stop(settings) is True
    assert _gone(state.pid)
    assert server.ensure_running(settings)


def test_queued_job_survives_stop_and_start(settings: Settings) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from slimyq.redis import connect

    conn = connect(settings)
    job = Queue("database", connection=conn, serializer=JSONSerializer).enqueue_call("builtins.len", args=([1],))
    conn.close()
    assert server.stop(settings) is True
    server.start(settings)
    conn = connect(settings)
    queue = Queue("database", connection=conn, serializer=JSONSerializer)
    assert queue.count == 1
    assert conn.exists(job.key) == 1
    assert queue.job_ids == [job.id]
    conn.close()


def test_startup_failure_shows_the_log(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-valkey"
    fake.write_text("#!/bin/sh\necho '*** FATAL CONFIG FILE ERROR: pretend'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(server, "_binary", lambda: fake)
    with pytest.raises(SlimyqError) as caught:
        server.ensure_running(settings)
    message = str(caught.value)
    assert "exited with status 1" in message
    assert "FATAL CONFIG FILE ERROR: pretend" in message


def test_startup_timeout_shows_the_log(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-valkey"
    fake.write_text("#!/bin/sh\necho 'daemonizing, honest'\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(server, "_binary", lambda: fake)
    started = time.monotonic()
    with pytest.raises(SlimyqError) as caught:
        server.ensure_running(settings, timeout=0.5)
    assert time.monotonic() - started < 5
    assert "was not answering after 0.5 s" in str(caught.value)
    assert "daemonizing, honest" in str(caught.value)


def test_daemon_dying_while_starting_is_reported_without_waiting(settings: Settings) -> None:
    where = server.paths(settings)
    where.socket.mkdir(parents=True)  # valkey cannot bind its socket here
    started = time.monotonic()
    with pytest.raises(SlimyqError) as caught:
        server.ensure_running(settings, timeout=30)
    assert time.monotonic() - started < 10
    assert "exited while starting" in str(caught.value)
    assert "Unix socket" in str(caught.value)


def test_data_dir_too_long_for_a_socket(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / ("d" * 120))
    with pytest.raises(ConfigError, match="too long"):
        server.ensure_running(settings)
    assert not (tmp_path / ("d" * 120)).exists()


def test_redis_url_means_no_embedded_server(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://:secretpw@127.0.0.1:1/0", data_dir=tmp_path / "d")
    for call in (server.ensure_running, server.start):
        with pytest.raises(UsageError) as caught:
            call(settings)
        assert "secretpw" not in str(caught.value)
        assert "REDIS_URL" in str(caught.value)
    assert not (tmp_path / "d").exists()
