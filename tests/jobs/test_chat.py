"""The chat queue's handlers: the real ``openai`` SDK against a local fake server, audit rows,
message validation and bulk validation."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from fake_openai import FakeOpenAI, Response, empty, error, fake_openai, reply, slow
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from slimyq import llm
from slimyq.config import Settings, load_settings
from slimyq.db import AuditLog, connect_url, database_proxy, migrate
from slimyq.errors import ValidationFailed
from slimyq.jobs import registry
from slimyq.jobs.base import JobContext, PermanentError
from slimyq.jobs.chat import bulk_messages, chat_bot_interaction, message_validation
from slimyq.payloads.chat import BulkMessages, ChatBotInteraction, MessageValidation
from slimyq.payloads.common import validate_payload

__all__ = ["fake_openai"]  # the fixture, used by name

KEY = "sk-test-4f1d2c3b5a697887"


@pytest.fixture(autouse=True)
def fresh_clients() -> Iterator[None]:
    llm.reset_clients()
    yield
    llm.reset_clients()


def _connect(url: str) -> peewee.Database:
    database = connect_url(url)
    migrate(database)
    database_proxy.initialize(database)
    return database


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[peewee.Database]:
    database = _connect(f"sqlite:///{tmp_path / 'chat.sqlite3'}")
    yield database
    database.close()


@pytest.fixture
def any_db(database_url: str) -> Iterator[peewee.Database]:
    database = _connect(database_url)
    yield database
    database.close()


def make_settings(server: FakeOpenAI | None = None, key: str = KEY, **chat: Any) -> Settings:
    overrides: dict[str, Any] = {"chat.api_key": key, "chat.base_url": server.url if server else ""}
    overrides.update({f"chat.{k}": v for k, v in chat.items()})
    return load_settings(overrides=overrides).settings


def make_ctx(settings: Settings, db: peewee.Database, job_id: str | None = None, attempt: int = 1) -> JobContext:
    return JobContext(
        job_id=job_id or uuid.uuid4().hex, queue="chat", attempt=attempt, settings=settings, db_factory=lambda: db
    )


def payload(prompt: str = "Hello bot", **fields: Any) -> ChatBotInteraction:
    data = {"prompt": prompt, "userId": "u1", **fields}
    model = validate_payload(ChatBotInteraction, data)
    assert isinstance(model, ChatBotInteraction)
    return model


def audit_rows() -> list[AuditLog]:
    return list(AuditLog.select().order_by(AuditLog.timestamp))


# ---------------------------------------------------------------- replies


def test_normal_reply_sends_model_limits_and_guild_prompt(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(reply("  Hi there!  "))
    p = payload("  What is up?  ", guildId="g42", requestId="req-1")
    result = chat_bot_interaction(p, make_ctx(make_settings(fake_openai), sqlite_db))

    assert result["success"] is True
    assert result["reply"] == "Hi there!"
    assert result["usedFallback"] is False
    assert result["processedAt"].endswith("Z")
    [req] = fake_openai.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["model"] == "gpt-4o-mini"
    assert req.body["max_tokens"] == 180
    assert req.body["temperature"] == 0.7
    assert req.body["messages"] == [
        {
            "role": "system",
            "content": "You are Slimy AI, helping guild g42. Keep replies short and avoid sensitive data.",
        },
        {"role": "user", "content": "What is up?"},
    ]
    [row] = audit_rows()
    assert (row.action, row.resource_type, row.resource_id) == ("chat_bot_interaction", "chat", "g42")
    assert (row.user_id, row.request_id, row.success, row.error_message) == ("u1", "req-1", True, None)
    assert row.details == {"prompt": "What is up?", "reply": "Hi there!"}


def test_without_guild_uses_the_generic_prompt_and_configured_model(
    fake_openai: FakeOpenAI, sqlite_db: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "my-local-model")
    result = chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))
    assert result["reply"] == "Hello from the fake model."
    [req] = fake_openai.requests
    assert req.body["model"] == "my-local-model"
    assert req.body["messages"][0] == {
        "role": "system",
        "content": "You are Slimy AI, a concise assistant for Slimy guilds.",
    }
    [row] = audit_rows()
    assert row.resource_id == "global"


def test_settings_from_environment(
    fake_openai: FakeOpenAI, sqlite_db: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    settings = load_settings().settings
    assert llm.chat_mode(settings) == "openai"
    assert chat_bot_interaction(payload(), make_ctx(settings, sqlite_db))["usedFallback"] is False
    assert len(fake_openai.requests) == 1


def test_fallback_without_key_makes_no_request(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    settings = make_settings(fake_openai, key="")
    assert llm.chat_mode(settings) == "fallback"
    result = chat_bot_interaction(payload(guildId="g1"), make_ctx(settings, sqlite_db))
    assert result["success"] is True
    assert result["usedFallback"] is True
    assert result["reply"] == "OpenAI integration is not configured yet, but your message was received."
    assert fake_openai.requests == []
    [row] = audit_rows()
    assert row.action == "chat_bot_interaction" and row.success is True


@pytest.mark.parametrize("content", ["", "   \n", None])
def test_empty_completion_gets_the_listening_reply(
    fake_openai: FakeOpenAI, sqlite_db: peewee.Database, content: str | None
) -> None:
    fake_openai.script(reply(content) if content is not None else reply(None))
    result = chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))
    assert result["reply"] == "I'm not sure how to reply just yet, but I'm listening."
    assert result["usedFallback"] is False
    fake_openai.script(empty())
    assert chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))["reply"].startswith(
        "I'm not"
    )


def test_client_is_created_once_and_reused(fake_openai: FakeOpenAI) -> None:
    chat = make_settings(fake_openai).chat
    assert llm.client(chat) is llm.client(chat)
    other = make_settings(fake_openai, request_timeout=5).chat
    assert llm.client(other) is not llm.client(chat)
    assert llm.client(chat).max_retries == 0


# ---------------------------------------------------------------- errors


def test_500_is_transient_then_the_retry_succeeds(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(error(500, "upstream exploded"), reply("second time lucky"))
    settings = make_settings(fake_openai)
    job_id = uuid.uuid4().hex
    with pytest.raises(llm.OpenAITransientError) as info:
        chat_bot_interaction(payload(), make_ctx(settings, sqlite_db, job_id, attempt=1))
    assert not isinstance(info.value, PermanentError)
    assert info.value.error_type == "openai_transient"
    assert info.value.status == 500
    assert len(fake_openai.requests) == 1  # the SDK did not retry on its own
    assert audit_rows() == []  # not the last attempt: the retry may still succeed

    result = chat_bot_interaction(payload(), make_ctx(settings, sqlite_db, job_id, attempt=2))
    assert result["reply"] == "second time lucky"
    assert len(fake_openai.requests) == 2
    [row] = audit_rows()
    assert row.action == "chat_bot_interaction"


def test_429_exposes_retry_after(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(error(429, "slow down", code="rate_limit_exceeded", headers={"Retry-After": "7"}))
    with pytest.raises(llm.OpenAITransientError) as info:
        chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))
    assert info.value.status == 429
    assert info.value.retry_after == 7
    assert len(fake_openai.requests) == 1


def test_429_insufficient_quota_is_permanent(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(error(429, "You exceeded your current quota", code="insufficient_quota"))
    with pytest.raises(llm.OpenAIPermanentError):
        chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))


def test_retry_after_header_forms() -> None:
    assert llm.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert llm.retry_after({"retry-after": "3"}) == 3
    assert llm.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # in the past
    assert llm.retry_after({"retry-after": "999999"}) == llm.MAX_RETRY_AFTER
    assert llm.retry_after({"retry-after": "soon"}) is None
    assert llm.retry_after({}) is None


def test_400_fails_permanently_as_openai_error(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(error(400, "Invalid value for temperature"))
    with pytest.raises(llm.OpenAIPermanentError) as info:
        chat_bot_interaction(payload(guildId="g9"), make_ctx(make_settings(fake_openai), sqlite_db))
    assert isinstance(info.value, PermanentError)
    assert info.value.error_type == "openai_error"
    assert "400" in str(info.value) and "Invalid value for temperature" in str(info.value)
    assert len(fake_openai.requests) == 1
    [row] = audit_rows()
    assert (row.action, row.success, row.resource_id) == ("chat_bot_error", False, "g9")
    assert "Invalid value for temperature" in row.error_message
    assert row.details["prompt"] == "Hello bot"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "the body is not a JSON object"),
        (b"[" * 100_000, "the body is not a JSON object"),  # deeper than the parser goes
        ([{"choices": []}], "the body is not a JSON object"),
        ({"choices": {"0": {}}}, "choices is a dict, not a list"),
        ({"choices": ["hi"]}, "choices[0] is a str, not an object"),
        ({"choices": [{"message": "hi"}]}, "choices[0].message is a str, not an object"),
        ({"choices": [{"message": {"content": 42}}]}, "choices[0].message.content is an int, not text"),
    ],
)
def test_a_reply_that_is_not_a_chat_completion_fails_permanently_naming_what_is_wrong(
    fake_openai: FakeOpenAI, sqlite_db: peewee.Database, body: Any, reason: str
) -> None:
    fake_openai.script(Response(body=body))
    with pytest.raises(llm.OpenAIPermanentError) as info:
        chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))
    assert str(info.value) == f"{fake_openai.url} answered with something that is not a chat completion: {reason}"
    assert info.value.error_type == "openai_error"
    assert len(fake_openai.requests) == 1  # not retried: a retry would be billed for the same answer
    [row] = audit_rows()
    assert (row.action, row.success) == ("chat_bot_error", False) and reason in row.error_message


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                        st.sampled_from(["choices", "message", "content", "usage", "prompt_tokens",
                                         "completion_tokens", "model", "x"]), kids, max_size=4),
                    max_leaves=12))
def test_any_json_reply_is_read_or_refused_never_crashes(data: Any) -> None:
    chat = make_settings().chat
    raw = json.dumps(data).encode()
    try:
        text, (prompt, completion, model) = llm.read_completion(raw, chat)
    except llm.OpenAIPermanentError as exc:
        assert str(exc).startswith("the OpenAI API answered with something that is not a chat completion: ")
        return
    assert isinstance(text, str) and text == text.strip()
    assert type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0
    assert model is None or isinstance(model, str)
    choices = data.get("choices")  # read: data is a JSON object, choices None, [] or a list of objects
    content = (choices[0].get("message") or {}).get("content") if choices else None
    assert text == (content or "").strip()


def test_slow_server_past_the_timeout_is_transient(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(slow(5), slow(5))
    settings = make_settings(fake_openai, request_timeout=0.5)
    job_id = uuid.uuid4().hex
    with pytest.raises(llm.OpenAITransientError) as info:
        chat_bot_interaction(payload(), make_ctx(settings, sqlite_db, job_id, attempt=1))
    assert "timed out" in str(info.value)
    assert info.value.status is None
    assert audit_rows() == []
    # The last attempt records the failure.
    with pytest.raises(llm.OpenAITransientError):
        chat_bot_interaction(payload(), make_ctx(settings, sqlite_db, job_id, attempt=3))
    [row] = audit_rows()
    assert row.action == "chat_bot_error" and "timed out" in row.error_message


def test_unreachable_server_is_transient(sqlite_db: peewee.Database) -> None:
    with FakeOpenAI() as server:
        url = server.url
    settings = load_settings(overrides={"chat.api_key": KEY, "chat.base_url": url}).settings
    with pytest.raises(llm.OpenAITransientError) as info:
        chat_bot_interaction(payload(), make_ctx(settings, sqlite_db))
    assert "cannot reach" in str(info.value)


def test_api_key_never_appears_in_errors_or_audit(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(error(401, f"Incorrect API key provided: {KEY}"))
    with pytest.raises(llm.OpenAIPermanentError) as info:
        chat_bot_interaction(payload(), make_ctx(make_settings(fake_openai), sqlite_db))
    assert KEY not in str(info.value) and "***" in str(info.value)
    [row] = audit_rows()
    assert KEY not in row.error_message and KEY not in str(row.details)


# ---------------------------------------------------------------- audit rows: once per job


def test_audit_row_written_once_across_runs_of_the_same_job(any_db: peewee.Database, fake_openai: FakeOpenAI) -> None:
    settings = make_settings(fake_openai)
    job_id = uuid.uuid4().hex
    first = chat_bot_interaction(payload(guildId="g1"), make_ctx(settings, any_db, job_id, attempt=1))
    second = chat_bot_interaction(payload(guildId="g1"), make_ctx(settings, any_db, job_id, attempt=2))
    assert first["success"] and second == first  # the first answer, not a second one
    assert len(fake_openai.requests) == 1  # OpenAI was asked once
    rows = audit_rows()
    assert len(rows) == 1
    assert rows[0].id == make_ctx(settings, any_db, job_id).derived_id("audit")
    assert rows[0].details == {"prompt": "Hello bot", "reply": "Hello from the fake model."}

    # An error row from a run that failed for good is replaced when the job later succeeds.
    job2 = uuid.uuid4().hex
    fake_openai.script(error(503, "overloaded"))
    with pytest.raises(llm.OpenAITransientError):
        chat_bot_interaction(payload(), make_ctx(settings, any_db, job2, attempt=3))
    chat_bot_interaction(payload(), make_ctx(settings, any_db, job2, attempt=1))
    by_job = [r for r in audit_rows() if r.id == make_ctx(settings, any_db, job2).derived_id("audit")]
    assert [(r.action, r.success, r.error_message) for r in by_job] == [("chat_bot_interaction", True, None)]
    assert len(audit_rows()) == 2


def test_long_prompt_and_reply_are_truncated_in_the_audit(fake_openai: FakeOpenAI, sqlite_db: peewee.Database) -> None:
    fake_openai.script(reply("r" * 1500))
    chat_bot_interaction(payload("p" * 2000), make_ctx(make_settings(fake_openai), sqlite_db))
    [row] = audit_rows()
    assert row.details == {"prompt": "p" * 500, "reply": "r" * 1000}


# ---------------------------------------------------------------- payloads and registry


def test_prompt_is_trimmed_and_bounded() -> None:
    assert payload("  hi  ").prompt == "hi"
    for bad in ("   ", "x" * 2001):
        with pytest.raises(Exception, match="prompt"):
            payload(bad)
    assert payload("  " + "x" * 2000 + "  ").prompt == "x" * 2000


def test_chat_types_registered_without_importing_openai_or_peewee() -> None:
    code = (
        "import sys\n"
        "from slimyq.jobs import registry\n"
        "jt = registry.get('chat-bot-interaction')\n"
        "assert jt.queue == 'chat' and jt.rate_limited and jt.positional == 'prompt', jt\n"
        "assert registry.by_func('slimyq.jobs.chat.bulk_messages').name == 'bulk_messages'\n"
        "assert registry.get('message_validation').func_name == 'slimyq.jobs.chat.message_validation'\n"
        "bad = [m for m in ('openai', 'peewee') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for jt in (registry.get(n) for n in ("chat_bot_interaction", "message_validation", "bulk_messages")):
        assert callable(jt.handler())


# ---------------------------------------------------------------- message validation


def validate(message: Any) -> dict[str, Any]:
    p = validate_payload(MessageValidation, {"message": message})
    assert isinstance(p, MessageValidation)
    return message_validation(p, make_ctx(make_settings(), db=None))  # type: ignore[arg-type]


VALIDATION_CASES: list[tuple[Any, str]] = [
    ("hello", "Invalid message format"),
    ([{"role": "user", "content": "hi"}], "Invalid message format"),
    ({}, "Invalid message role"),
    ({"role": "system", "content": ""}, "Invalid message role"),
    ({"role": "USER", "content": "hi"}, "Invalid message role"),
    ({"role": "user"}, "Message content is required"),
    ({"role": "assistant", "content": "  \n "}, "Message content is required"),
    ({"role": "user", "content": 42}, "Message content is required"),
    ({"role": "user", "content": "<script>" + "x" * 10_000}, "Message content too long (max 10000 characters)"),
    ({"role": "user", "content": "hi <SCRIPT>alert(1)</script>"}, "Message contains potentially unsafe content"),
    ({"role": "user", "content": "click JavaScript:void(0)"}, "Message contains potentially unsafe content"),
    ({"role": "user", "content": "DATA:text/HTML,<b>"}, "Message contains potentially unsafe content"),
    ({"role": "assistant", "content": "VBScript:msgbox"}, "Message contains potentially unsafe content"),
]


def test_a_null_message_is_refused_by_the_payload_rule_for_required_fields() -> None:
    # A null required field is decided by the payload model (at enqueue: exit 2; in the worker, for
    # a plain RQ client's job: a validation error), never dropped on the wire to fail differently.
    with pytest.raises(ValidationFailed) as info:
        validate_payload(MessageValidation, {"message": None})
    assert info.value.problems == ["message: is required (null is not a value)"]


@pytest.mark.parametrize(("message", "expected"), VALIDATION_CASES)
def test_message_validation_errors_in_order(message: Any, expected: str) -> None:
    with pytest.raises(PermanentError) as info:
        validate(message)
    assert str(info.value) == expected
    assert info.value.error_type == "validation_error"


def test_message_validation_trims_and_keeps_other_fields() -> None:
    result = validate({"role": "user", "content": "  hello  ", "name": "x"})
    assert result == {"success": True, "validatedMessage": {"role": "user", "content": "hello", "name": "x"}}
    assert (
        validate({"role": "user", "content": " " + "y" * 10_000 + " "})["validatedMessage"]["content"] == "y" * 10_000
    )


def test_bulk_messages_reports_each_and_a_summary() -> None:
    messages = [
        {"role": "user", "content": " a "},
        "nope",
        {"role": "bot", "content": "b"},
        {"role": "assistant", "content": "ok"},
    ]
    p = validate_payload(BulkMessages, {"messages": messages})
    assert isinstance(p, BulkMessages)
    result = bulk_messages(p, make_ctx(make_settings(), db=None))  # type: ignore[arg-type]
    assert result == {
        "success": False,
        "results": [
            {"index": 0, "success": True, "validatedMessage": {"role": "user", "content": "a"}},
            {"index": 1, "success": False, "error": "Invalid message format"},
            {"index": 2, "success": False, "error": "Invalid message role"},
            {"index": 3, "success": True, "validatedMessage": {"role": "assistant", "content": "ok"}},
        ],
        "summary": {"total": 4, "success": 2, "errors": 2},
    }
    empty_p = validate_payload(BulkMessages, {"messages": []})
    ok: Callable[..., Any] = bulk_messages
    assert ok(empty_p, None) == {"success": True, "results": [], "summary": {"total": 0, "success": 0, "errors": 0}}


# ---------------------------------------------------------------- through a real worker


def test_worker_retries_a_500_and_fails_a_400_at_once(
    fake_openai: FakeOpenAI, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: enqueue, a threaded worker in burst mode, the SDK against the fake server."""
    import redis as redis_lib

    from slimyq import producer
    from slimyq.runtime.worker import QueueWorker

    db_url = f"sqlite:///{tmp_path / 'worker.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", db_url)
    _connect(db_url).close()
    settings = load_settings(
        overrides={"chat.api_key": KEY, "chat.base_url": fake_openai.url, "queues.chat.backoff_base": 0.2}
    ).settings
    # Requests are answered in order: job 1 gets the 500 (Retry-After: 1), job 2 the 400, the retry the reply.
    fake_openai.script(error(500, "try later", headers={"Retry-After": "1"}), error(400, "bad"), reply("retried"))
    jt = registry.get("chat_bot_interaction")
    conn = redis_lib.Redis.from_url(redis_url)
    reqs = [producer.EnqueueRequest(jt, payload(f"prompt {i}"), "chat", job_id=f"chat-{i}") for i in (1, 2)]
    list(producer.enqueue_many(conn, settings, reqs))

    QueueWorker(settings, "chat", concurrency=1, burst=True, conn=conn).run()

    ok = producer.wait_for(conn, "chat-1", timeout=5)
    assert ok.status == "finished", ok
    assert ok.result["reply"] == "retried" and ok.result["usedFallback"] is False
    bad = producer.wait_for(conn, "chat-2", timeout=5)
    assert bad.status == "failed" and "bad" in (bad.error or "")
    assert len(fake_openai.requests) == 3  # one try for the 400, two for the 500: no SDK retries
    first, _, retry = fake_openai.requests
    assert retry.at - first.at >= 0.9  # the worker honoured Retry-After: 1 over the 0.2 s backoff
    for job_id in ("chat-1", "chat-2"):
        assert KEY.encode() not in b"".join(
            v if isinstance(v, bytes) else b"" for v in conn.hgetall(f"rq:job:{job_id}").values()
        )
    db = _connect(db_url)
    rows = {(r.action, r.success) for r in AuditLog.select()}
    db.close()
    assert rows == {("chat_bot_interaction", True), ("chat_bot_error", False)}
    conn.close()
