"""Connections from URLs, and the schema migrations (peewee's ``playhouse.migrations`` runner).

``sqlite:///path`` (WAL, foreign keys on, busy timeout), ``postgresql://`` (psycopg 3) and
``mysql://`` (PyMySQL) all go through ``playhouse.db_url``. Errors come back as slimyq errors with
the password redacted: a bad URL is a :class:`ConfigError` (exit 2), a database that cannot be
reached is :class:`Unreachable` (exit 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import peewee

from slimyq.db import instrument
from slimyq.db.models import database_proxy, table_names
from slimyq.db.mysql import make_exact, require_exact_connection, require_exact_text, table_problems
from slimyq.errors import ConfigError, SlimyqError, Unreachable
from slimyq.redact import redact_text, redact_url

if TYPE_CHECKING:
    from playhouse.migrations import Runner

    from slimyq.config import Settings

SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
HISTORY_TABLE = "slimyq_schema_migrations"
SQLITE_PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000, "synchronous": "normal"}
CONNECT_TIMEOUT = 10  # seconds, for PostgreSQL and MySQL unless the URL says otherwise
# PostgreSQL connections notice a silent partition (packets dropped, no reset) within seconds, so a
# job waiting on a reply that will never come fails as "database unavailable" (retried without
# using up an attempt) instead of hanging in a C call past its timeout. libpq's TCP options; a
# URL's own values win.
PG_TCP_PARAMS = {"keepalives": 1, "keepalives_idle": 3, "keepalives_interval": 1, "keepalives_count": 3,
                 "tcp_user_timeout": 6_000}
LOCK_TIMEOUT = 600  # seconds to wait for another process's migration
_PG_LOCK_KEY = 0x736C696D79710001  # "slimyq" + 1: the advisory lock held while migrating
_UNREACHABLE = re.compile(
    r"refused|timed? ?out|timeout|no route|unreachable|name or service|not known|"
    r"could not translate|nodename|lost connection|can't connect|connection reset",
    re.IGNORECASE,
)


def connect_url(url: str) -> peewee.Database:
    """A connected :class:`peewee.Database` for ``url``."""
    from playhouse.db_url import connect, register_database

    from slimyq.db.sqlite import SerializedSqliteDatabase

    register_database(SerializedSqliteDatabase, "sqlite")
    shown = _shown(url)
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"database URL {shown} is not valid ({exc}); check DATABASE_URL") from None
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"database URL {shown} has an unsupported scheme {parsed.scheme!r}; "
            f"use one of {', '.join(s + '://' for s in SCHEMES)} (e.g. sqlite:///path/to/file.db)"
        )
    query = parse_qs(parsed.query)
    params: dict[str, Any] = {}
    if scheme == "sqlite":
        params["pragmas"] = dict(SQLITE_PRAGMAS)
    else:
        if "connect_timeout" not in query:
            params["connect_timeout"] = CONNECT_TIMEOUT
        if scheme.startswith("postgres"):
            params["prefer_psycopg3"] = True
            params.update({k: v for k, v in PG_TCP_PARAMS.items() if k not in query})
    try:
        db: peewee.Database = connect(url, unquote_password=True, unquote_user=True, **params)
    except ValueError:
        example = "sqlite:///path/to/file.db" if scheme == "sqlite" else f"{scheme}://user@host/dbname"
        raise ConfigError(f"database URL {shown} names no database; write it like {example}") from None
    if "passwd" in db.connect_params:  # db_url's spelling, deprecated by PyMySQL
        db.connect_params["password"] = db.connect_params.pop("passwd")
    instrument.install(db)  # query durations, errors and connections (and spans, with tracing)
    try:
        db.connect()
    except peewee.ImproperlyConfigured:
        extra = "postgres" if scheme.startswith("postgres") else scheme
        raise ConfigError(
            f"no driver for {scheme}:// URLs is installed; pip install 'slimyq[{extra}]'"
        ) from None
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:
        raise _connect_error(scheme, shown, db, exc) from None
    return db


def _shown(url: str) -> str:
    """The URL for messages: password redacted, even in a URL too malformed to parse."""
    shown = redact_url(url)
    if "@" in shown and "***@" not in shown:
        shown = re.sub(r":[^:@/]*@", ":***@", shown)
    return shown


def _connect_error(scheme: str, shown: str, db: peewee.Database, exc: Exception) -> Unreachable:
    reason = short_reason(exc)
    if scheme == "sqlite":
        return Unreachable(
            f"cannot open the SQLite database {db.database} ({reason}); check the path and its permissions"
        )
    if _UNREACHABLE.search(reason):
        return Unreachable(f"cannot reach the database at {shown} ({reason}); start it or set DATABASE_URL")
    return Unreachable(
        f"cannot connect to the database at {shown} ({reason}); "
        "check the name and credentials in DATABASE_URL"
    )


def short_reason(exc: BaseException) -> str:
    """The gist of a driver error, one line, no secrets: ``connection refused``."""
    orig = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    args = orig.args
    text = str(args[1]) if len(args) >= 2 and isinstance(args[0], int) else str(orig)  # PyMySQL
    text = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(orig).__name__)
    errno = re.search(r"\[Errno -?\d+\] ([^)\]]+)", text)
    if errno:
        text = errno.group(1)
    elif " failed: " in text:
        text = text.rsplit(" failed: ", 1)[1]
    text = re.sub(r"^(FATAL|ERROR):\s*", "", text).strip()
    text = text[:1].lower() + text[1:]
    return redact_text(text)


def connect_settings(settings: Settings) -> peewee.Database:
    """Connect to the configured database (creating the data dir for the SQLite default).

    Unlike :func:`open_database` it neither checks nor applies migrations: for ``slimyq db``.
    """
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return connect_url(settings.effective_database_url)


def open_database(settings: Settings) -> peewee.Database:
    """The database the models use, ready: connected, bound to the models, schema up to date.

    The SQLite default (no ``DATABASE_URL``) migrates itself on first use; a configured database
    must be migrated explicitly with ``slimyq db migrate``.
    """
    db = connect_settings(settings)
    pending = pending_migrations(db)
    if pending:
        if settings.database_url:
            db.close()
            count = f"{len(pending)} migration{'s' if len(pending) != 1 else ''}"
            raise SlimyqError(f"database schema is not up to date ({count} pending); run `slimyq db migrate`")
        migrate(db)
    try:
        require_exact_text(db, [*table_names(), HISTORY_TABLE])
    except SlimyqError:
        db.close()
        raise
    database_proxy.initialize(db)
    return db


# ---------------------------------------------------------------- migrations


def _runner(db: peewee.Database) -> Runner:
    from playhouse.migrations import Runner

    return Runner(db, str(MIGRATIONS_DIR), table_name=HISTORY_TABLE)


def migration_status(db: peewee.Database) -> list[tuple[str, bool]]:
    """Every migration (file or history row) in order, and whether it has been applied."""
    return [(m.name, m.applied is not None) for m in _runner(db).status()]


def pending_migrations(db: peewee.Database) -> list[str]:
    return [name for name, applied in migration_status(db) if not applied]


def migrate(db: peewee.Database) -> list[str]:
    """Apply pending migrations; returns their names (empty when up to date).

    Safe to run from several processes at once: they take turns under a lock, and whoever comes
    second finds nothing left to do. On MySQL it also converts any slimyq table found in another
    character set or collation (altered by hand, restored from an old dump) back to exact text.
    """
    tables = [*table_names(), HISTORY_TABLE]
    require_exact_connection(db)
    applied: list[str] = []
    if pending_migrations(db):
        with _migration_lock(db):
            applied = _runner(db).up()
    if table_problems(db, tables):
        with _migration_lock(db):
            make_exact(db, tables)
        require_exact_text(db, tables)
    return applied


@contextmanager
def _migration_lock(db: peewee.Database) -> Iterator[None]:
    if isinstance(db, peewee.PostgresqlDatabase):
        _sql(db, "SELECT pg_advisory_lock(%s)", (_PG_LOCK_KEY,))
        try:
            yield
        finally:
            _sql(db, "SELECT pg_advisory_unlock(%s)", (_PG_LOCK_KEY,))
    elif isinstance(db, peewee.MySQLDatabase):
        name = f"slimyq_migrate:{db.database}"[:64]
        got = _sql(db, "SELECT GET_LOCK(%s, %s)", (name, LOCK_TIMEOUT)).fetchone()
        if not got or got[0] != 1:
            raise SlimyqError(
                f"another process has been migrating this database for {LOCK_TIMEOUT} s; "
                "wait for it to finish and run `slimyq db migrate` again"
            )
        try:
            yield
        finally:
            _sql(db, "SELECT RELEASE_LOCK(%s)", (name,))
    else:
        with _sqlite_file_lock(str(db.database)):
            yield


def _sql(db: Any, sql: str, params: tuple[Any, ...]) -> Any:
    return db.execute_sql(sql, params)  # peewee's stubs leave execute_sql untyped


@contextmanager
def _sqlite_file_lock(path: str) -> Iterator[None]:
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    import fcntl

    with open(f"{path}.migrate-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
