"""The database hook: every statement timed by operation and backend, errors counted, connections
tracked, on SQLite, PostgreSQL and MariaDB (real servers)."""

from __future__ import annotations

from collections.abc import Iterator

import peewee
import pytest

from slimyq.db import connect_url
from slimyq.db.instrument import install, operation
from slimyq.obs import ops


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    ops.drain("t")
    yield
    ops.drain("t")


def fields() -> dict[str, float]:
    return {f: float(v) for _key, f, _kind, v in ops.drain("t")}


@pytest.mark.parametrize(("sql", "op"), [
    ("SELECT 1", "select"), ("  insert INTO x VALUES (1)", "insert"), ("UPDATE x SET a=1", "update"),
    ("DELETE FROM x", "delete"), ("BEGIN IMMEDIATE", "begin"), ("WITH t AS (SELECT 1) SELECT * FROM t", "with"),
    ("SAVEPOINT s1", "savepoint"), ("VACUUM", "other"), ("", "other"),
])
def test_the_operation_is_the_statements_first_word(sql: str, op: str) -> None:
    assert operation(sql) == op


def _exercise(db: peewee.Database, backend: str) -> None:
    before = ops.connections().get(backend, 0)
    db.execute_sql("CREATE TABLE IF NOT EXISTS slimyq_probe (id INTEGER PRIMARY KEY, v INTEGER)")
    db.execute_sql("INSERT INTO slimyq_probe (id, v) VALUES (1, 1)")
    db.execute_sql("SELECT v FROM slimyq_probe").fetchall()
    with pytest.raises(peewee.DatabaseError):
        db.execute_sql("SELECT nope FROM slimyq_probe")
    if db.in_transaction():
        db.rollback()
    got = fields()
    head = f"db|{backend}"
    assert got[f"{head}|insert|count"] == 1
    assert got[f"{head}|select|count"] == 2  # the failing one is timed too
    assert got[f"dberr|{backend}|select"] == 1 and f"dberr|{backend}|insert" not in got
    buckets = sum(v for f, v in got.items() if f.startswith(f"{head}|select|le|"))
    assert buckets == 2 and got[f"{head}|select|sum"] > 0
    db.close()
    assert ops.connections().get(backend, 0) == before - 1


def test_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = connect_url(f"sqlite:///{tmp_path / 'probe.db'}")
    assert ops.connections()["sqlite"] >= 1
    _exercise(db, "sqlite")


@pytest.mark.postgres
def test_postgresql(pg_url: str) -> None:
    db = connect_url(pg_url)
    _exercise(db, "postgresql")


@pytest.mark.mysql
def test_mariadb(mysql_url: str) -> None:
    db = connect_url(mysql_url)
    _exercise(db, "mysql")


def test_installing_twice_measures_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = connect_url(f"sqlite:///{tmp_path / 'twice.db'}")
    install(db)
    fields()
    db.execute_sql("SELECT 1")
    assert fields()["db|sqlite|select|count"] == 1
    db.close()
