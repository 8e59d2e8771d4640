"""Schema migrations: status, idempotent migrate, concurrent migrate, the SQLite default."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slimyq.config import load_settings
from slimyq.db import (
    HISTORY_TABLE,
    Conversation,
    connect_url,
    migrate,
    migration_status,
    open_database,
    pending_migrations,
    table_names,
)
from slimyq.db.connect import MIGRATIONS_DIR, _runner
from slimyq.errors import ConfigError, SlimyqError, Unreachable

ALL = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))


def test_migrations_are_numbered_and_present():
    assert ALL and ALL[0] == "0001_initial"
    assert all(name[:4].isdigit() for name in ALL)


def test_migrate_applies_everything_once(fresh_url):
    db = connect_url(fresh_url)
    try:
        assert migration_status(db) == [(name, False) for name in ALL]
        assert pending_migrations(db) == ALL

        assert migrate(db) == ALL
        assert migrate(db) == []
        assert migration_status(db) == [(name, True) for name in ALL]
        assert set(table_names()) | {HISTORY_TABLE} <= set(db.get_tables())
    finally:
        db.close()


def test_migrate_is_idempotent_across_connections(fresh_url):
    for expected in (ALL, [], []):
        db = connect_url(fresh_url)
        try:
            assert migrate(db) == expected
        finally:
            db.close()


def test_initial_migration_reverts_cleanly(fresh_url):
    db = connect_url(fresh_url)
    try:
        migrate(db)
        runner = _runner(db)
        while runner.down():
            pass
        assert not set(table_names()) & set(db.get_tables())
        assert pending_migrations(db) == ALL
        assert migrate(db) == ALL
    finally:
        db.close()


def test_concurrent_migrate_applies_once(fresh_url):
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        db = connect_url(fresh_url)
        try:
            barrier.wait(timeout=30)
            results.append(migrate(db))
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors, errors
    assert sorted(name for applied in results for name in applied) == ALL
    db = connect_url(fresh_url)
    try:
        history = db.execute_sql(f"SELECT COUNT(*) FROM {HISTORY_TABLE}").fetchone()[0]
        assert history == len(ALL)
    finally:
        db.close()


def test_concurrent_migrate_from_processes_applies_once(fresh_url):
    code = (
        "import sys; from slimyq.db import connect_url, migrate; "
        "print(','.join(migrate(connect_url(sys.argv[1]))))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, fresh_url], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(name for out in outputs for name in out.split(",") if name) == ALL


def test_sqlite_default_migrates_itself_on_first_use(isolated_env: Path):
    settings = load_settings().settings
    assert settings.database_url == ""
    assert not settings.sqlite_path.exists()

    db = open_database(settings)
    try:
        assert settings.sqlite_path.is_file()
        assert pending_migrations(db) == []
        Conversation.create(id="c1", user_id="u1")  # the models are bound to it
        assert Conversation.get_by_id("c1").personality_mode == "helpful"
    finally:
        db.close()

    again = open_database(settings)  # nothing left to do the second time
    try:
        assert Conversation.select().count() == 1
    finally:
        again.close()


def test_sqlite_default_has_wal_and_foreign_keys(isolated_env: Path):
    db = open_database(load_settings().settings)
    try:
        assert db.pragma("journal_mode") == "wal"
        assert db.pragma("foreign_keys") == 1
        assert db.pragma("busy_timeout") == 5000
    finally:
        db.close()


def test_configured_database_must_be_migrated_explicitly(fresh_url):
    settings = load_settings().settings
    assert settings.database_url == fresh_url

    with pytest.raises(SlimyqError) as info:
        open_database(settings)
    assert info.value.exit_code == 1
    message = str(info.value)
    assert "not up to date" in message
    assert f"{len(ALL)} migration" in message
    assert "run `slimyq db migrate`" in message

    db = connect_url(fresh_url)
    migrate(db)
    db.close()
    opened = open_database(settings)
    assert Conversation.select().count() == 0
    opened.close()


@pytest.mark.parametrize(
    "url",
    ["redis://u:secret@localhost/0", "oracle://u:secret@db/x", "u:secret@127.0.0.1/x", "sqlite+pool:///x"],
)
def test_unknown_scheme_is_a_config_error(url):
    with pytest.raises(ConfigError) as info:
        connect_url(url)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "secret" not in message
    assert "postgresql://" in message and "mysql://" in message and "sqlite://" in message


def test_url_without_database_name_is_a_config_error():
    with pytest.raises(ConfigError, match="names no database"):
        connect_url("postgresql://u:secret@127.0.0.1:5432")


def test_unreachable_postgres_names_the_redacted_url():
    with pytest.raises(Unreachable) as info:
        connect_url("postgresql://u:secret@127.0.0.1:1/x")
    message = str(info.value)
    assert message == (
        "cannot reach the database at postgresql://u:***@127.0.0.1:1/x (connection refused); "
        "start it or set DATABASE_URL"
    )


def test_unreachable_mysql_names_the_redacted_url():
    with pytest.raises(Unreachable) as info:
        connect_url("mysql://u:secret@127.0.0.1:1/x")
    message = str(info.value)
    assert "mysql://u:***@127.0.0.1:1/x" in message
    assert "secret" not in message
    assert "\n" not in message


def test_unopenable_sqlite_file_is_reported(tmp_path: Path):
    with pytest.raises(Unreachable, match="cannot open the SQLite database"):
        connect_url(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")


def test_migrations_ship_with_the_package():
    from importlib.resources import files

    assert files("slimyq").joinpath("db/migrations/0001_initial.py").is_file()
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert '"db/migrations/*.py"' in pyproject.read_text()
