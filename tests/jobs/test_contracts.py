"""The job contracts through the CLI on every backend: SQLite, PostgreSQL, MariaDB, and MariaDB
in a latin1 database (migrated by ``slimyq db migrate``).

Every job type is enqueued with ``slimyq enqueue``, run by ``slimyq worker --burst`` and read back
with ``slimyq job show --json``, with the edge inputs that once differed between backends: users
that differ only in case, accents or surrounding spaces, emoji at the 10,000-character limit,
blank strings, empty titles, nulls, plain RQ clients. Each test asserts the same observable
behaviour (exit codes, results, errors) on all four.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer
from typer.testing import Result

DENIED = "Conversation not found or access denied"
TRIMMED = "must not start or end with whitespace (ids are compared exactly and never trimmed)"
EMOJI_10K = "\U0001f600" * 10_000
DATABASE_TYPES = ("create-conversation", "save-message", "update-conversation", "delete-conversation",
                  "get-conversations", "get-messages")

Cli = Callable[..., Result]


@pytest.fixture
def backend(backend_url: str, cli: Cli) -> str:
    """The backend's DATABASE_URL, migrated with `slimyq db migrate` (on a latin1 MariaDB database
    too: the migration makes the tables utf8mb4 and exact)."""
    migrated = cli("db", "migrate")
    assert migrated.exit_code == 0, migrated.stderr
    return backend_url


class Jobs:
    """Enqueue, run and read jobs through the CLI, as a user would."""

    def __init__(self, cli: Cli, conn: redis.Redis) -> None:
        self.cli = cli
        self.conn = conn

    def enqueue(self, job_type: str, *args: str) -> str:
        result = self.cli("enqueue", job_type, *args, "-q")
        assert result.exit_code == 0, (job_type, args, result.stderr)
        return result.stdout.strip()

    def refused(self, job_type: str, *args: str) -> str:
        """Enqueue that must fail validation: exit 2, one error, nothing enqueued."""
        before = self.conn.dbsize()
        result = self.cli("enqueue", job_type, *args)
        assert result.exit_code == 2, (job_type, args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert self.conn.dbsize() == before
        return result.stderr

    def work(self, *queues: str) -> None:
        result = self.cli("worker", *queues, "--burst")
        assert result.exit_code == 0, result.stderr

    def show(self, job_id: str) -> dict[str, Any]:
        result = self.cli("job", "show", job_id, "--json")
        assert result.exit_code == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def result(self, job_id: str) -> Any:
        shown = self.show(job_id)
        assert shown["state"] == "finished", shown
        return shown["result"]

    def failure(self, job_id: str) -> tuple[str, str]:
        shown = self.show(job_id)
        assert shown["state"] == "failed", shown
        return shown["error_type"], shown["error"]

    def run(self, queue: str, job_type: str, *args: str) -> Any:
        job_id = self.enqueue(job_type, *args)
        self.work(queue)
        return self.result(job_id)


@pytest.fixture
def jobs(backend: str, cli: Cli, r: redis.Redis) -> Iterator[Jobs]:
    yield Jobs(cli, r)


@pytest.fixture
def refusals(database_url: str, cli: Cli, r: redis.Redis) -> Iterator[Jobs]:
    """For what is refused before the database is touched: SQLite, PostgreSQL and MariaDB."""
    yield Jobs(cli, r)


# ------------------------------------------------------------------ ownership is exact


IMPOSTORS = ["ORD", "\u00f3rd"]  # case and accent; padded ids never get past validation (below)


def test_users_differing_in_case_or_accent_own_nothing(jobs: Jobs) -> None:
    conv = jobs.run("database", "create-conversation", "--user", "ord", "--title", "Plans")["conversationId"]
    jobs.run("database", "save-message", "--conversation", conv, "--user", "ord", "--role", "user", "--content", "hi")
    attempts: dict[tuple[str, str], str] = {}
    for user in IMPOSTORS:
        attempts[(user, "get-conversations")] = jobs.enqueue("get-conversations", "--user", user)
        attempts[(user, "get-messages")] = jobs.enqueue("get-messages", "--conversation", conv, "--user", user)
        attempts[(user, "save-message")] = jobs.enqueue(
            "save-message", "--conversation", conv, "--user", user, "--role", "user", "--content", "mine now"
        )
        attempts[(user, "update-conversation")] = jobs.enqueue(
            "update-conversation", "--conversation", conv, "--user", user, "--title", "Taken"
        )
        attempts[(user, "delete-conversation")] = jobs.enqueue(
            "delete-conversation", "--conversation", conv, "--user", user
        )
    jobs.work("database")
    for (user, job_type), job_id in attempts.items():
        if job_type == "get-conversations":
            assert jobs.result(job_id) == [], user
        else:
            assert jobs.failure(job_id) == ("access_denied", DENIED), (user, job_type)
    (mine,) = jobs.run("database", "get-conversations", "--user", "ord")
    assert (mine["id"], mine["title"], mine["messageCount"]) == (conv, "Plans", 1)


def test_padded_or_blank_user_ids_are_refused_by_every_database_job_type(refusals: Jobs) -> None:
    jobs = refusals
    conv = str(uuid.uuid4())
    args = {
        "create-conversation": [],
        "save-message": ["--conversation", conv, "--role", "user", "--content", "x"],
        "update-conversation": ["--conversation", conv, "--title", "t"],
        "delete-conversation": ["--conversation", conv],
        "get-conversations": [],
        "get-messages": ["--conversation", conv],
    }
    for user in ("ord ", " ord", "   "):
        for job_type in DATABASE_TYPES:
            stderr = jobs.refused(job_type, "--user", user, *args[job_type])
            assert stderr.startswith("error: --user: must not"), (job_type, stderr)
            if user.strip():
                assert TRIMMED in stderr


# ------------------------------------------------------------------ text is stored exactly


def test_text_round_trips_exactly_and_blank_titles_are_null(jobs: Jobs) -> None:
    untitled_job = jobs.enqueue("create-conversation", "--user", "u", "--title", "")
    titled_job = jobs.enqueue("create-conversation", "--user", "u", "--title", " caf\u00e9 \U0001f600 ")
    jobs.work("database")
    untitled = jobs.result(untitled_job)["conversationId"]
    conv = jobs.result(titled_job)["conversationId"]
    contents = [EMOJI_10K, "emoji \U0001f600", "  spaced  ", "Ord ORD ord"]
    for content in contents:
        jobs.enqueue("save-message", "--conversation", conv, "--user", "u", "--role", "user", "--content", content)
    jobs.work("database")
    messages = jobs.run("database", "get-messages", "--conversation", conv, "--user", "u")
    assert sorted(m["content"] for m in messages) == sorted(contents)
    listed = {c["id"]: c["title"] for c in jobs.run("database", "get-conversations", "--user", "u")}
    assert listed == {untitled: None, conv: " caf\u00e9 \U0001f600 "}
    jobs.run("database", "update-conversation", "--conversation", conv, "--user", "u", "--title", "   ")
    listed = {c["id"]: c["title"] for c in jobs.run("database", "get-conversations", "--user", "u")}
    assert listed == {untitled: None, conv: None}


def test_blank_too_long_and_nul_content_is_refused_at_enqueue(refusals: Jobs) -> None:
    jobs = refusals
    conv = str(uuid.uuid4())
    base = ["--conversation", conv, "--user", "u", "--role", "user"]
    assert "--content: must not be empty or whitespace only" in jobs.refused("save-message", *base, "--content", "  ")
    too_long = jobs.refused("save-message", *base, "--content", EMOJI_10K + "x")
    assert "--content: String should have at most 10000 characters" in too_long
    assert "NUL" in jobs.refused("save-message", *base, "--content", "a\x00b")
    assert "--title: String should have at most 200 characters" in jobs.refused(
        "create-conversation", "--user", "u", "--title", "\U0001f600" * 201
    )


# ------------------------------------------------------------------ chat, validation, canary


def test_chat_jobs_and_the_same_blank_rule(jobs: Jobs) -> None:
    reply = jobs.run("chat", "chat-bot-interaction", "--user", "ord", "--guild", "g1", "  hello  ")
    assert (reply["success"], reply["usedFallback"]) == (True, True)
    jobs.run("chat", "chat-bot-interaction", "--user", "ORD", "hi")
    entries = json.loads(jobs.cli("audit", "list", "--user", "ord", "--json").stdout)
    assert [(e["user_id"], e["action"], e["resource_id"]) for e in entries] == [("ord", "chat_bot_interaction", "g1")]
    ok = jobs.run("chat", "message-validation", "--message", json.dumps({"role": "user", "content": EMOJI_10K}))
    assert ok["validatedMessage"]["content"] == EMOJI_10K
    bulk = jobs.run("chat", "bulk-messages", "--messages",
                    json.dumps([{"role": "user", "content": "   "}, {"role": "assistant", "content": " ok "}]))
    assert [r.get("error") or r["validatedMessage"]["content"] for r in bulk["results"]] == [
        "Message content is required", "ok"]
    assert "--message: is required (null is not a value)" in jobs.refused("message-validation", "--message", "null")
    assert "--user: " + TRIMMED in jobs.refused("chat-bot-interaction", "--user", "ord ", "hi")
    for queue in ("database", "chat", "audit"):
        assert jobs.run(queue, "canary", "--queue", queue) == {"success": True, "attempt": 1}


# ------------------------------------------------------------------ audit: exact grouping and matching


def test_audit_report_and_cleanup_tell_case_apart(jobs: Jobs) -> None:
    for action, user in (("Login", "Alice"), ("login", "alice"), ("login", "alice"), ("LOGIN", "alice ")):
        if user != user.strip():
            assert TRIMMED in jobs.refused("log-event", "--action", action, "--resource-type", "session",
                                           "--resource-id", "s", "--user", user)
            continue
        jobs.run("audit", "log-event", "--action", action, "--resource-type", "session", "--resource-id", "s",
                 "--user", user)
    report = jobs.run("audit", "audit-report", "--start-date", "2000-01-01T00:00:00Z",
                      "--end-date", "2999-01-01T00:00:00Z")
    assert report["summary"]["total"] == 3
    assert report["summary"]["actionBreakdown"] == {"Login": 1, "login": 2}
    assert sorted((u["userId"], u["count"]) for u in report["topUsers"]) == [("Alice", 1), ("alice", 2)]
    cleaned = jobs.run("audit", "audit-cleanup", "--before-date", "2999-01-01T00:00:00Z",
                       "--exclude-actions", json.dumps(["Login"]))
    assert cleaned == {"success": True, "deletedCount": 2}
    left = json.loads(jobs.cli("audit", "list", "--json").stdout)
    assert [(e["action"], e["user_id"]) for e in left] == [("Login", "Alice")]


def _millis(iso: str) -> dt.datetime:
    stamp = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def test_bulk_log_events_write_the_same_entries_and_fail_bad_events_on_their_own(jobs: Jobs) -> None:
    padded = {"action": "login", "resourceType": "session", "resourceId": "s", "userId": "alice "}
    written = [
        {"action": "Login", "resourceType": "session", "resourceId": "s\U0001f600", "userId": "Alice",
         "details": {"note": "caf\u00e9 \U0001f600", "n": 1}, "userAgent": "UA \U0001f600", "success": False,
         "errorMessage": "bad password \U0001f600"},
        {"action": "login", "resourceType": "session", "resourceId": "s", "userId": "alice",
         "ipAddress": "10.0.0.1", "requestId": "r1", "sessionId": "sess"},
    ]
    events = [written[0], padded, {"action": "login"}, written[1]]
    job_id = jobs.enqueue("bulk-log-events", "--events", json.dumps(events))
    jobs.work("audit")
    result = jobs.result(job_id)
    assert (result["success"], result["summary"]) == (False, {"total": 4, "success": 2, "errors": 2})
    failed = {r["index"]: r["error"] for r in result["results"] if not r["success"]}
    assert failed == {1: f"userId: {TRIMMED}", 2: "Missing required audit fields: action, resourceType, resourceId"}
    ok = {r["index"]: r for r in result["results"] if r["success"]}
    assert sorted(ok) == [0, 3] and len({r["loggedAt"] for r in ok.values()}) == 1
    entries = {e["id"]: e for e in json.loads(jobs.cli("audit", "list", "--json").stdout)}
    assert sorted(entries) == sorted(r["auditLogId"] for r in ok.values())  # the padded event wrote nothing
    for index, event in ((0, written[0]), (3, written[1])):
        entry = entries[ok[index]["auditLogId"]]
        assert _millis(entry["timestamp"]) == _millis(ok[index]["loggedAt"]), (entry, ok[index])
        assert {k: entry[k] for k in ("user_id", "action", "resource_type", "resource_id", "details", "user_agent",
                                      "ip_address", "session_id", "request_id", "success", "error_message")} == {
            "user_id": event["userId"], "action": event["action"], "resource_type": event["resourceType"],
            "resource_id": event["resourceId"], "details": event.get("details", {}),
            "user_agent": event.get("userAgent"), "ip_address": event.get("ipAddress"),
            "session_id": event.get("sessionId"), "request_id": event.get("requestId"),
            "success": event.get("success", True), "error_message": event.get("errorMessage"),
        }
    assert [e["user_id"] for e in json.loads(jobs.cli("audit", "list", "--user", "alice", "--json").stdout)] == [
        "alice"]


def test_bulk_log_events_that_are_not_a_list_of_at_most_10000_are_refused_at_enqueue(refusals: Jobs) -> None:
    jobs = refusals
    for not_a_list in ("null", json.dumps({"action": "login"})):
        stderr = jobs.refused("bulk-log-events", "--events", not_a_list)
        assert stderr == "error: --events: Input should be a valid list\n", stderr
    too_many = jobs.refused("bulk-log-events", "--events", json.dumps([{}] * 10_001))
    assert "--events: List should have at most 10000 items" in too_many


# ------------------------------------------------------------------ bulk files and plain RQ clients


def test_bulk_lines_are_refused_by_the_same_rules(refusals: Jobs, tmp_path: Path) -> None:
    jobs = refusals
    path = tmp_path / "jobs.jsonl"
    lines = [
        {"type": "create_conversation", "payload": {"userId": "ord"}},
        {"type": "create_conversation", "payload": {"userId": "ord "}},
        {"type": "message_validation", "payload": {"message": None}},
        {"type": "save_message", "payload": {"conversationId": str(uuid.uuid4()), "userId": "u", "role": "user",
                                             "content": " "}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = jobs.cli("enqueue", "--file", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: line 2: userId: {TRIMMED}",
        "error: line 3: message: is required (null is not a value)",
        "error: line 4: content: must not be empty or whitespace only",
        f"error: {path}: 3 of 4 lines are invalid; nothing was enqueued",
    ], result.stderr
    assert jobs.conn.dbsize() == 0


def test_a_plain_rq_client_meets_the_same_rules_in_the_worker(jobs: Jobs) -> None:
    q = Queue("database", connection=jobs.conn, serializer=JSONSerializer)
    padded = q.enqueue("slimyq.jobs.database.create_conversation", userId="ord ").id
    untitled = q.enqueue("slimyq.jobs.database.create_conversation", userId="ord", title="").id
    chat = Queue("chat", connection=jobs.conn, serializer=JSONSerializer)
    null = chat.enqueue("slimyq.jobs.chat.message_validation", message=None).id
    jobs.work("database", "chat")
    assert jobs.failure(padded) == ("validation_error", f"userId: {TRIMMED}")
    assert jobs.failure(null) == ("validation_error", "message: is required (null is not a value)")
    conv = jobs.result(untitled)["conversationId"]
    assert [(c["id"], c["title"]) for c in jobs.run("database", "get-conversations", "--user", "ord")] == [(conv, None)]


# ------------------------------------------------------------------ effect once, through redelivery


def test_redelivered_jobs_change_nothing_after_later_jobs_and_cleanup(jobs: Jobs) -> None:
    def redeliver(job_id: str) -> None:  # by hand, as a crash after the commit would
        requeued = jobs.cli("job", "requeue", job_id, "--yes")
        assert requeued.exit_code == 0, requeued.stderr
        jobs.work("database")

    conv = jobs.run("database", "create-conversation", "--user", "u", "--title", "First")["conversationId"]
    old = jobs.enqueue("update-conversation", "--conversation", conv, "--user", "u", "--title", "Old")
    jobs.work("database")
    first_old = jobs.result(old)
    jobs.run("database", "update-conversation", "--conversation", conv, "--user", "u", "--title", "New")
    redeliver(old)
    assert jobs.result(old) == first_old
    assert [c["title"] for c in jobs.run("database", "get-conversations", "--user", "u")] == ["New"]

    gone = jobs.enqueue("delete-conversation", "--conversation", conv, "--user", "u")
    jobs.work("database")
    first_gone = jobs.result(gone)
    cleaned = jobs.cli("audit", "cleanup", "--before", "2999-01-01")  # conversation_deleted goes too
    assert cleaned.exit_code == 0, cleaned.stderr
    redeliver(gone)
    assert jobs.result(gone) == first_gone  # not "not found": the marker outlived the audit entry
    assert jobs.run("database", "get-conversations", "--user", "u") == []


def test_a_job_id_reused_after_the_job_left_redis_returns_the_first_result_and_writes_nothing(jobs: Jobs) -> None:
    conv = jobs.run("database", "create-conversation", "--user", "u")["conversationId"]
    save = ["save-message", "--conversation", conv, "--user", "u", "--role", "user", "--job-id", "req-1"]
    assert jobs.enqueue(*save, "--content", "first") == "req-1"
    jobs.work("database")
    first = jobs.result("req-1")
    gone = jobs.cli("job", "delete", "req-1", "--yes")  # as when it expires from Redis
    assert gone.exit_code == 0, gone.stderr
    assert jobs.enqueue(*save, "--content", "second") == "req-1"  # the id is free in Redis again
    jobs.work("database")
    assert jobs.result("req-1") == first
    messages = jobs.run("database", "get-messages", "--conversation", conv, "--user", "u")
    assert [m["content"] for m in messages] == ["first"]
