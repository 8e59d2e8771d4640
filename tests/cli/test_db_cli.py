"""`slimyq db migrate|status` on SQLite, PostgreSQL and MariaDB, as a user runs them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slimyq.db.connect import MIGRATIONS_DIR

ALL = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))


def test_status_fails_until_migrate_then_succeeds(cli, fresh_url):
    before = cli("db", "status")
    assert before.exit_code == 1
    assert "0001_initial" in before.stdout
    assert "no" in before.stdout
    assert f"{len(ALL)} migration" in before.stderr
    assert "slimyq db migrate" in before.stderr

    applied = cli("db", "migrate")
    assert applied.exit_code == 0, applied.stderr
    assert applied.stdout.splitlines() == [f"applied {name}" for name in ALL]

    again = cli("db", "migrate")
    assert again.exit_code == 0
    assert again.stdout.strip() == "database is up to date"

    after = cli("db", "status")
    assert after.exit_code == 0, after.stderr
    assert "yes" in after.stdout and " no " not in after.stdout
    assert after.stderr == ""


def test_status_as_json_and_csv(cli, fresh_url):
    pending = cli("db", "status", "--format", "json")
    assert pending.exit_code == 1
    assert json.loads(pending.stdout) == [{"migration": name, "applied": False} for name in ALL]

    cli("db", "migrate")
    done = cli("db", "status", "--json")
    assert done.exit_code == 0
    assert json.loads(done.stdout) == [{"migration": name, "applied": True} for name in ALL]

    table = cli("db", "status", "-f", "csv")
    assert table.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert rows == [{"migration": name, "applied": "true"} for name in ALL]


def test_migrate_as_json(cli, fresh_url):
    first = cli("db", "migrate", "--format", "json")
    assert first.exit_code == 0
    data = json.loads(first.stdout)
    assert data["applied"] == ALL
    assert data["database"].split("://")[0] == fresh_url.split("://")[0]

    second = cli("db", "migrate", "--json")
    assert json.loads(second.stdout)["applied"] == []


def test_migrate_ndjson_prints_one_line_per_applied_migration(cli, fresh_url):
    result = cli("db", "migrate", "-f", "ndjson")
    assert result.exit_code == 0
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"migration": n} for n in ALL]


def test_sqlite_default_in_the_data_dir(cli, isolated_env: Path):
    sqlite_file = isolated_env / "data" / "slimyq.sqlite3"
    status = cli("db", "status")
    assert status.exit_code == 1  # explicit commands report; they do not migrate behind your back
    assert cli("db", "migrate").exit_code == 0
    assert sqlite_file.is_file()
    assert cli("db", "status").exit_code == 0


def test_database_url_flag_wins(cli, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'flag.sqlite3'}"
    result = cli("--database-url", url, "db", "migrate")
    assert result.exit_code == 0
    assert (tmp_path / "flag.sqlite3").is_file()
    assert cli("--database-url", url, "db", "status").exit_code == 0


@pytest.mark.parametrize("command", ["status", "migrate"])
def test_bad_scheme_is_a_usage_error(cli, command):
    result = cli("db", command, env={"DATABASE_URL": "oracle://u:secret@db.example/x"})
    assert result.exit_code == 2
    assert "oracle://u:***@db.example/x" in result.stderr
    assert "postgresql://" in result.stderr and "mysql://" in result.stderr
    assert "secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["status", "migrate"])
def test_unreachable_postgres_is_one_redacted_line(cli, command):
    result = cli("db", command, env={"DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/x"})
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: cannot reach the database at postgresql://u:***@127.0.0.1:1/x (connection refused); "
        "start it or set DATABASE_URL"
    ]
    assert "secret" not in result.stdout + result.stderr


def test_db_commands_do_not_import_peewee_at_startup():
    code = (
        "import sys, slimyq.cli, slimyq.cli.dbcmd; "
        "print(sorted({'peewee', 'rq', 'openai'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
