"""Exact text on MariaDB: the 0003 migration converts existing tables (latin1 or case-insensitive)
to utf8mb4 with a NO PAD binary collation, and a connection that would compare or store text
inexactly is refused with the fix."""

from __future__ import annotations

import peewee
import pytest

from slimyq.config import load_settings
from slimyq.db import HISTORY_TABLE, connect_url, migrate, open_database, table_names
from slimyq.db.connect import _runner
from slimyq.db.mysql import EXACT_COLLATIONS, make_exact, text_problems
from slimyq.errors import SlimyqError

pytestmark = pytest.mark.mysql

EMOJI = "emoji \U0001f600"


def _collations(db: peewee.Database) -> set[str]:
    rows = db.execute_sql(
        "SELECT DISTINCT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND COLLATION_NAME IS NOT NULL"
    ).fetchall()
    return {r[0] for r in rows}


def _table_collations(db: peewee.Database) -> dict[str, str]:
    rows = db.execute_sql(
        "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
    ).fetchall()
    return dict(rows)


def _old_schema(url: str) -> peewee.Database:
    """The schema as slimyq created it before 0003 (the database's default collation)."""
    db = connect_url(url)
    _runner(db).up(target="0002_job_runs")
    return db


def test_a_new_latin1_database_gets_every_table_and_text_column_at_utf8mb4_nopad_bin(new_mysql_database):
    db = connect_url(new_mysql_database("latin1"))
    try:
        assert db.execute_sql("SELECT @@character_set_database").fetchone()[0] == "latin1"
        migrate(db)
        ours = [*table_names(), HISTORY_TABLE]
        assert _table_collations(db) == dict.fromkeys(ours, "utf8mb4_nopad_bin")  # later ADD COLUMNs inherit it too
        columns = db.execute_sql(
            "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND CHARACTER_SET_NAME IS NOT NULL"
        ).fetchall()
        assert {(t, c) for t, c, _, _ in columns} >= {
            ("audit_logs", "user_id"), ("audit_logs", "action"), ("chat_conversations", "user_id"),
            ("chat_messages", "content"), ("job_runs", "job_id"), ("job_effects", "job_id"),
        }
        assert {t for t, _, _, _ in columns} == set(ours)
        assert {(charset, collation) for _, _, charset, collation in columns} == {("utf8mb4", "utf8mb4_nopad_bin")}
    finally:
        db.close()


def test_migration_converts_existing_latin1_tables_and_keeps_their_rows(new_mysql_database):
    db = _old_schema(new_mysql_database("latin1"))
    try:
        assert any(c.startswith("latin1") for c in _collations(db))
        db.execute_sql(
            "INSERT INTO chat_conversations (id, user_id, title, personality_mode, created_at, updated_at) "
            "VALUES ('c1', 'ord', 'caf\u00e9', 'helpful', NOW(), NOW())"
        )
        migrate(db)
        assert _collations(db) <= set(EXACT_COLLATIONS)
        assert text_problems(db, [*table_names(), HISTORY_TABLE]) == []
        # the latin1 row survives the conversion unchanged
        assert db.execute_sql("SELECT user_id, title FROM chat_conversations").fetchall() == (("ord", "caf\u00e9"),)
        for other in ("ORD", "Ord", "ord ", " ord"):
            found = db.execute_sql("SELECT COUNT(*) FROM chat_conversations WHERE user_id = %s", (other,))
            assert found.fetchone()[0] == 0, other
        rules = db.execute_sql(
            "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = DATABASE()"
        ).fetchall()
        assert list(rules) == [("chat_messages", "chat_conversations", "CASCADE")]  # the key is back
        db.execute_sql("UPDATE chat_conversations SET title = %s", (EMOJI,))
        assert db.execute_sql("SELECT title FROM chat_conversations").fetchone()[0] == EMOJI
    finally:
        db.close()


def test_case_insensitive_tables_become_exact(new_mysql_database):
    db = _old_schema(new_mysql_database())
    try:
        assert "utf8mb4_general_ci" in _collations(db)
        for n, user in enumerate(("ord", "ORD", "ord ")):
            db.execute_sql(
                "INSERT INTO audit_logs (id, user_id, action, resource_type, resource_id, timestamp, success) "
                "VALUES (%s, %s, 'login', 'user', %s, NOW(), 1)",
                (f"id-{n}", user, user),
            )
        migrate(db)
        grouped = db.execute_sql("SELECT user_id, COUNT(*) FROM audit_logs GROUP BY user_id").fetchall()
        assert sorted(r[0] for r in grouped) == ["ORD", "ord", "ord "]
    finally:
        db.close()


def test_a_table_left_inexact_is_refused_and_migrate_repairs_it(new_mysql_database, monkeypatch, cli, redis_url):
    mysql_url = new_mysql_database()
    db = connect_url(mysql_url)
    migrate(db)
    db.execute_sql("ALTER TABLE audit_logs CONVERT TO CHARACTER SET latin1")
    db.close()
    monkeypatch.setenv("DATABASE_URL", mysql_url)
    settings = load_settings().settings
    with pytest.raises(SlimyqError) as err:
        open_database(settings)
    message = str(err.value)
    assert "audit_logs" in message and "latin1" in message and "slimyq db migrate" in message
    worker = cli("worker", "database", "--burst")  # a worker refuses to start, with the same fix
    assert worker.exit_code == 1
    assert worker.stderr == f"error: {message}\n"
    status = cli("db", "status")  # and `db status` gates a deploy on it
    assert status.exit_code == 1 and status.stderr == f"error: {message}\n"
    db = connect_url(mysql_url)
    try:
        assert migrate(db) == []
        assert text_problems(db, [*table_names(), HISTORY_TABLE]) == []
    finally:
        db.close()
    open_database(settings).close()
    assert cli("db", "status").exit_code == 0


def test_a_connection_that_is_not_utf8mb4_is_refused_before_anything_is_changed(new_mysql_database):
    url = new_mysql_database()
    db = connect_url(url)
    migrate(db)
    db.close()
    latin1 = connect_url(f"{url}?charset=latin1")
    try:
        assert text_problems(latin1, table_names()) == ["the connection uses character set latin1 (need utf8mb4)"]
        with pytest.raises(SlimyqError, match=r"charset=utf8mb4") as err:
            migrate(latin1)
        assert "slimyq db migrate" not in str(err.value)  # migrating would not help: the URL is the fix
    finally:
        latin1.close()


def test_make_exact_converts_a_teams_own_table_and_nothing_else(new_mysql_database):
    db = connect_url(new_mysql_database("latin1"))
    try:
        migrate(db)

        class ClubMetrics(peewee.Model):
            club = peewee.CharField(max_length=64)
            note = peewee.TextField(null=True)

            class Meta:
                database = db
                table_name = "club_metrics"

        db.create_tables([ClubMetrics])
        assert _table_collations(db)["club_metrics"].startswith("latin1")  # the database's default
        ClubMetrics.create(club="ord", note="caf\u00e9")
        make_exact(db, ["club_metrics"])
        make_exact(db, ["club_metrics"])  # a second run changes nothing
        assert set(_table_collations(db).values()) == {"utf8mb4_nopad_bin"}
        assert text_problems(db, ["club_metrics"]) == []
        assert [m.club for m in ClubMetrics.select().where(ClubMetrics.club.in_(["ORD", "ord ", "ord"]))] == ["ord"]
        ClubMetrics.create(club="c2", note=EMOJI)
        assert [m.note for m in ClubMetrics.select().order_by(ClubMetrics.id)] == ["caf\u00e9", EMOJI]
    finally:
        db.close()
