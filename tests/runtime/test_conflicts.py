"""Deadlocks on PostgreSQL and MariaDB: the victim's job runs again at once, as a conflict.

Two workers (processes, hosts) that write one conversation at once can deadlock each other: on
MariaDB a message's foreign-key check share-locks the conversation row, and the conversation's
UPDATE then wants it exclusively. The database rolls the victim's transaction back and is fine:
the job is retried at once without using up an attempt, and nobody is told the database is down
(no reconnect, no 5 s wait). Each deadlock here is a real one, between the worker and a
transaction of the test's own that the database never picks as the victim (PostgreSQL: its
``deadlock_timeout`` is longer, so the worker's backend detects the cycle; MariaDB: it has written
more rows, and InnoDB rolls back the lighter transaction).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import pytest
from harness import Env, WorkerProc, attempts, enqueue, leftovers, tally, wait_done, wait_until

from slimyq.db.conflicts import conflict
from slimyq.runtime.codec import BATCH_ROLLED_BACK, CONFLICT_ERROR, ClaimedJob
from slimyq.runtime.execute import Result, database_unavailable

BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
USER = "u1"


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    name = "private_pg_url" if request.param == "postgres" else "new_mysql_database"
    got = request.getfixturevalue(name)
    return got if isinstance(got, str) else got()


class Holder:
    """A transaction of the test's own on a raw driver connection, that never loses a deadlock."""

    def __init__(self, database_url: str) -> None:
        self.mysql = database_url.startswith("mysql")
        if self.mysql:
            import pymysql

            rest = database_url.split("://", 1)[1]
            user, _, hostpath = rest.partition("@")
            hostport, _, name = hostpath.partition("/")
            host, _, port = hostport.partition(":")
            self.conn: Any = pymysql.connect(host=host, port=int(port), user=user, database=name, autocommit=True)
        else:
            import psycopg

            self.conn = psycopg.connect(database_url, autocommit=True)
        self.sql("SET deadlock_timeout = '30s'" if not self.mysql else "SET innodb_lock_wait_timeout = 60")

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        statement = statement.replace("?", "%s")
        if self.mysql:
            with self.conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall())
        cur = self.conn.execute(statement, params)
        return list(cur.fetchall()) if cur.description else []

    def begin_heavy(self, conversation_id: str) -> None:
        """BEGIN, lock the conversation's row, and (MariaDB) write enough rows to outweigh any batch."""
        self.sql("BEGIN")
        self.sql("UPDATE chat_conversations SET title = 'held' WHERE id = ?", conversation_id)
        if self.mysql:
            for i in range(200):
                self.sql("INSERT INTO chat_conversations (id, user_id, title, personality_mode, created_at, "
                         "updated_at) VALUES (?, 'ballast', 'b', 'helpful', NOW(), NOW())",
                         f"ballast-{i}-{uuid.uuid4().hex[:8]}")

    def others_waiting(self) -> int:
        """How many other transactions of this database (not of another test's) wait for a lock."""
        if self.mysql:
            waiting = self.sql("SELECT COUNT(*) FROM information_schema.innodb_trx t "
                               "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                               "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()")
            return int(waiting[0][0])
        self.sql("SELECT pg_stat_clear_snapshot()")  # else read once per transaction, and ours is open
        return int(self.sql("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")[0][0])

    def close(self) -> None:
        self.conn.close()

    @classmethod
    def rows(cls, database_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        holder = cls(database_url)
        try:
            return holder.sql(statement, *params)
        finally:
            holder.close()


def _conversation_rows(database_url: str, ids: list[str]) -> None:
    from slimyq.db import connect_url
    from slimyq.db.models import Conversation, database_proxy, utcnow

    db = connect_url(database_url)
    database_proxy.initialize(db)
    now = utcnow()
    with db.atomic():
        for cid in ids:
            Conversation.insert(id=cid, user_id=USER, title="t", personality_mode="helpful", created_at=now,
                                updated_at=now).execute()
    db.close()


def _deadlock(database_url: str, nested: bool = False) -> BaseException:
    """A real deadlock between a peewee connection and a Holder: the peewee side's exception
    (``nested``: met inside a savepoint, as a batched job meets it)."""
    from slimyq.db import connect_url

    x, y = str(uuid.uuid4()), str(uuid.uuid4())
    _conversation_rows(database_url, [x, y])
    holder = Holder(database_url)
    db = connect_url(database_url)
    caught: list[BaseException] = []

    def victim() -> None:
        try:
            with db.atomic(), db.atomic() if nested else contextlib.nullcontext():
                db.execute_sql("UPDATE chat_conversations SET title = 'v' WHERE id = %s", (y,))
                db.execute_sql("UPDATE chat_conversations SET title = 'v' WHERE id = %s", (x,))
        except Exception as exc:
            caught.append(exc)

    holder.begin_heavy(x)
    thread = threading.Thread(target=victim)
    thread.start()
    wait_until(lambda: caught or holder.others_waiting() >= 1, 30, 0.25, "the victim waiting for the held row")
    assert not caught, f"the victim failed before it waited: {caught[0]!r}"
    holder.sql("UPDATE chat_conversations SET title = 'held' WHERE id = ?", y)  # the cycle: the victim gives way
    holder.sql("COMMIT")
    thread.join(30)
    holder.close()
    db.close()
    assert len(caught) == 1, "the peewee side was not the deadlock's victim"
    return caught[0]


def test_a_deadlock_is_a_conflict_not_an_unreachable_database(url: str) -> None:
    from slimyq.db import migrate
    from slimyq.db.connect import connect_url

    migrate(connect_url(url))
    exc = _deadlock(url)
    assert isinstance(exc, peewee.OperationalError)  # what database_unavailable() took for an outage
    assert conflict(exc)
    assert not database_unavailable(exc)


def test_a_deadlock_met_in_a_savepoint_is_a_conflict_whatever_the_rollback_to_it_raises(url: str) -> None:
    """On MySQL the victim's whole transaction is gone: the rollback to the savepoint that follows
    is refused (it would fail anyway: ``SAVEPOINT ... does not exist``), with the deadlock as that
    error's context."""
    from slimyq.db import migrate
    from slimyq.db.conflicts import TransactionLost
    from slimyq.db.connect import connect_url

    migrate(connect_url(url))
    exc = _deadlock(url, nested=True)
    if url.startswith("mysql"):
        assert isinstance(exc, TransactionLost) and exc.__context__ is not None, repr(exc)
    assert conflict(exc)
    assert not database_unavailable(exc)


def test_an_outage_met_while_handling_a_deadlock_is_an_outage() -> None:
    """The connection lost on the way out of a deadlock: the connection must be dropped (an outage,
    retried after a while), not reused at once as after a conflict."""
    import pymysql

    deadlock = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
    lost = pymysql.err.OperationalError(2013, "Lost connection to server during query")
    try:
        try:
            raise peewee.OperationalError(deadlock)
        except peewee.OperationalError:
            raise peewee.OperationalError(lost) from None
    except peewee.OperationalError as later:
        assert later.__context__ is not None
        assert not conflict(later)
        assert database_unavailable(later)
    try:
        try:
            raise peewee.OperationalError(deadlock)
        except peewee.OperationalError as exc:
            raise ValueError("the handler's own error") from exc
    except ValueError as wrapped:
        assert conflict(wrapped)  # a deadlock a handler wrapped is still a conflict


def test_a_deadlock_a_handler_catches_still_ends_its_batch(url: str) -> None:
    """A batched job catches the deadlock it met and returns as if fine: on MySQL the database has
    rolled back the whole batch already (the jobs before it too) and later statements would commit
    on their own. Every failed statement is checked, so the batch ends there all the same: the
    jobs that ran in it are reported rolled back, in claim order, and the next job runs in a new
    transaction. (On PostgreSQL the transaction is left aborted, which ends the batch too; on
    MariaDB only the conflict check does.) A statement the handler sends after the deadlock is
    refused on MariaDB instead of committing on its own."""
    from slimyq.db import connect_url, migrate
    from slimyq.db.models import Conversation, database_proxy, utcnow
    from slimyq.runtime.batch import run_batch

    migrate(connect_url(url))
    x, y = str(uuid.uuid4()), str(uuid.uuid4())
    _conversation_rows(url, [x, y])
    db = connect_url(url)
    database_proxy.initialize(db)
    written = {key: str(uuid.uuid4()) for key in ("a", "c")}

    def insert(key: str) -> str:
        now = utcnow()
        Conversation.insert(id=written[key], user_id=USER, title=key, personality_mode="helpful", created_at=now,
                            updated_at=now).execute()
        return key

    after: list[str] = []

    def swallow() -> str:
        try:
            db.execute_sql("UPDATE chat_conversations SET title = 'v' WHERE id = %s", (y,))
            db.execute_sql("UPDATE chat_conversations SET title = 'v' WHERE id = %s", (x,))
        except peewee.DatabaseError:
            pass  # the handler's mistake: it goes on as if nothing happened
        try:
            db.execute_sql("UPDATE chat_conversations SET title = 'after' WHERE id = %s", (y,))
            after.append("ran")
        except peewee.DatabaseError as exc:
            after.append(type(exc).__name__)
        return "b"

    handlers = {"a": lambda: insert("a"), "b": swallow, "c": lambda: insert("c")}

    def run(job: ClaimedJob) -> Result:
        try:
            return Result(ok=True, value=handlers[job.id]())
        except Exception as exc:
            return Result(ok=False, error_type=type(exc).__name__, error=str(exc))

    holder = Holder(url)
    holder.begin_heavy(x)
    out: list[tuple[ClaimedJob, Result]] = []
    thread = threading.Thread(target=lambda: out.extend(run_batch(db, [ClaimedJob(i, f"e-{i}", {}) for i in "abc"],
                                                                  run)))
    thread.start()
    try:
        wait_until(lambda: holder.others_waiting() >= 1, 30, 0.25, "the batch waiting for the held row")
        holder.sql("UPDATE chat_conversations SET title = 'held' WHERE id = ?", y)  # the cycle: the batch gives way
        holder.sql("COMMIT")
    finally:
        thread.join(30)
        holder.close()
    assert [(job.id, r.error_type or "ok") for job, r in out] == [
        ("a", BATCH_ROLLED_BACK), ("b", BATCH_ROLLED_BACK), ("c", "ok")]
    assert not db.in_transaction()
    kept = {c.title for c in Conversation.select().where(Conversation.id.in_(list(written.values())))}
    db.close()
    assert kept == {"c"}  # a's write went with the deadlocked transaction; its rerun will write it
    titles = dict(Holder.rows(url, "SELECT id, title FROM chat_conversations WHERE id IN (?, ?)", x, y))
    assert titles[y] != "after", (after, titles)  # nothing of the lost transaction was committed


@pytest.fixture
def db_env(tmp_path: Any, redis_url: str, url: str) -> Iterator[Env]:
    yield Env.make(tmp_path / "rt", redis_url, url)


def test_the_workers_deadlocked_batch_runs_again_at_once_and_every_job_ends_once(
        db_env: Env, url: str, start: Callable[..., WorkerProc]) -> None:
    """The worker's batch locks Y (a message saved in it), then waits for X, which the test's
    transaction holds; the test's transaction then asks for Y. The worker's batch is the victim:
    its X job is retried as a conflict, its Y job as a batch-mate, and both end exactly once."""
    x, y = str(uuid.uuid4()), str(uuid.uuid4())
    _conversation_rows(url, [x, y])
    conn = db_env.conn()
    ids = enqueue(db_env, "save_message", [
        {"conversationId": y, "userId": USER, "role": "user", "content": "on y"},
        {"conversationId": x, "userId": USER, "role": "user", "content": "on x"},
    ])
    holder = Holder(url)
    holder.begin_heavy(x)
    worker = start("database", on=db_env)  # both jobs are queued: its first claim is one batch of two
    wait_until(lambda: holder.others_waiting() >= 1, 60, 0.25, "the worker's batch waiting for the held row")
    holder.sql("UPDATE chat_conversations SET title = 'held' WHERE id = ?", y)  # waits until the worker gives way
    holder.sql("COMMIT")
    holder.close()
    t = wait_done(conn, ids, 60)
    assert (t.finished, t.failed, t.duplicated) == (2, 0, 0), worker.log()[-3000:]
    on_y, on_x = (attempts(conn, i) for i in ids)
    assert [a.get("errorType") for a in on_x] == [CONFLICT_ERROR, None], on_x
    assert [a.get("attempt") for a in on_x] == [1, 1]  # no attempt used up by the deadlock
    assert [a.get("errorType") for a in on_y] == ["batch_rolled_back", None], on_y
    log = worker.log()
    assert "database.reconnect" not in log and "database unavailable" not in log, log[-3000:]
    worker.stop()
    assert leftovers(conn) == {}
    from slimyq.db import connect_url

    db = connect_url(url)
    counts = dict(db.execute_sql("SELECT conversation_id, COUNT(*) FROM chat_messages GROUP BY conversation_id"))
    db.close()
    assert counts == {x: 1, y: 1}


@pytest.mark.postgres
@pytest.mark.parametrize(("caught", "first_error"), [
    ({}, CONFLICT_ERROR),
    ({"savepoint": True}, None),
    ({"error": "other"}, "transaction_lost"),
], ids=["deadlock-caught", "deadlock-rolled-back-to-a-savepoint", "other-error-caught"])
def test_a_lone_job_that_commits_a_rolled_back_transaction_is_not_done(
        tmp_path: Any, redis_url: str, private_pg_url: str, start: Callable[..., WorkerProc],
        monkeypatch: pytest.MonkeyPatch, caught: dict[str, Any], first_error: str | None) -> None:
    """Outside a batch too: a handler that caught a database error in its transaction and returned
    had PostgreSQL turn its COMMIT into a rollback, so its write never happened. After a deadlock
    the job is a conflict and runs again (no attempt used); after another error it failed (the
    handler's bug: the usual rules). A handler that rolled back to a savepoint of its own got its
    transaction back: it is done, at the first run. The row is written once."""
    from harness import with_test_jobs

    env = Env.make(tmp_path / "rt", redis_url, private_pg_url)
    with_test_jobs(env, monkeypatch, attempts=2)
    conn = env.conn()
    ids = enqueue(env, "swallow_conflict", [{"key": "k", "marker": str(tmp_path / "first-run"), **caught}])
    worker = start("database", "--burst", on=env)
    assert worker.wait(120) == 0, worker.log()[-3000:]
    t = tally(conn, ids)
    assert (t.finished, t.failed) == (1, 0), worker.log()[-3000:]
    runs = attempts(conn, ids[0])
    expected = [(1, None)] if first_error is None else [(1, first_error), (1 if first_error == CONFLICT_ERROR else 2,
                                                                            None)]
    assert [(a["attempt"], a.get("errorType")) for a in runs] == expected, runs
    rows = Holder.rows(private_pg_url, "SELECT COUNT(*) FROM audit_logs WHERE action = 'swallow_conflict'")
    assert rows == [(1,)]
