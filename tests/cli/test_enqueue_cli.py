"""`slimyq enqueue <job-type>`: output, every validation path (exit 2, nothing enqueued), job-id
dedupe, scheduling, the rate-limit hook and `--wait` against a simulated worker."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import typer
from pydantic import Field
from rq.job import Job
from rq.serializers import JSONSerializer
from typer.testing import CliRunner

from slimyq.cli import _when, enqueue
from slimyq.cli._fields import kind_of, option_name
from slimyq.cli._group import SlimyqGroup
from slimyq.jobs import registry
from slimyq.payloads.common import Payload
from slimyq.runtime import codec, keys

CONV = "3f1c2a9e-7f3e-4f59-9a53-3b1e8f0c6a11"


def queued(r, queue: str = "database") -> int:
    return int(r.llen(keys.queue(queue)))


def nothing_enqueued(r) -> bool:
    return r.keys("rq:job:*") == [] and r.keys("rq:queue:*") == [] and r.keys("rq:scheduled:*") == []


def fetch(r, job_id: str) -> Job:
    return Job.fetch(job_id, connection=r, serializer=JSONSerializer)


# ------------------------------------------------------------------ happy paths and output


def test_prints_the_job_id_and_enqueues(cli, r):
    result = cli("enqueue", "create-conversation", "--user", "u1", "--title", "Hello", "--personality-mode", "casual")
    assert result.exit_code == 0, result.stderr
    job_id = result.stdout.strip()
    assert result.stdout == f"{job_id}\n"
    job = fetch(r, job_id)
    assert job.func_name == "slimyq.jobs.database.create_conversation"
    assert job.kwargs == {"userId": "u1", "title": "Hello", "personalityMode": "casual"}
    assert job.origin == "database"
    assert queued(r) == 1


def test_json_output_and_quiet(cli, r):
    result = cli("enqueue", "create-conversation", "--user", "u1", "--format", "json", "--job-id", "c-1")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "id": "c-1",
        "type": "create_conversation",
        "queue": "database",
        "status": "queued",
    }
    short = cli("enqueue", "get-conversations", "--user", "u1", "--limit", "5", "--json")
    assert json.loads(short.stdout)["type"] == "get_conversations"
    quiet = cli("enqueue", "create-conversation", "--user", "u1", "-q", "--job-id", "c-2")
    assert (quiet.stdout, quiet.stderr) == ("c-2\n", "")
    before = cli("enqueue", "--json", "create-conversation", "--user", "u1", "--job-id", "c-3")
    assert json.loads(before.stdout)["id"] == "c-3"
    assert fetch(r, json.loads(short.stdout)["id"]).kwargs == {"userId": "u1", "limit": 5}


def test_values_are_coerced_by_pydantic(cli, r):
    result = cli("enqueue", "canary", "--queue", "chat", "--sleep-seconds", "0.5", "--fail-times", "2", "-q")
    assert result.exit_code == 0, result.stderr
    job = fetch(r, result.stdout.strip())
    assert job.kwargs == {"sleepSeconds": 0.5, "failTimes": 2}
    assert job.origin == "chat"


def test_content_dash_reads_stdin(cli, r):
    result = cli(
        "enqueue",
        "save-message",
        "--conversation",
        CONV,
        "--user",
        "u1",
        "--role",
        "user",
        "--content",
        "-",
        "-q",
        input="line one\nline two\n",
    )
    assert result.exit_code == 0, result.stderr
    assert fetch(r, result.stdout.strip()).kwargs["content"] == "line one\nline two"


def test_json_fields_take_json_text(cli, r):
    messages = [{"role": "user", "content": "hi"}, {"role": "bot"}]
    if "bulk_messages" not in registry.JOBS and not any(t.name == "bulk_messages" for t in registry.all_types()):
        pytest.skip("chat job types are not registered")
    result = cli("enqueue", "bulk-messages", "--messages", json.dumps(messages), "-q")
    assert result.exit_code == 0, result.stderr
    assert fetch(r, result.stdout.strip()).kwargs == {"messages": messages}
    bad = cli("enqueue", "bulk-messages", "--messages", "{oops")
    assert bad.exit_code == 2
    assert (
        bad.stderr
        == "error: --messages: not valid JSON (Expecting property name enclosed in double quotes at column 2)\n"
    )
    wrong = cli("enqueue", "bulk-messages", "--messages", '{"a": 1}')
    assert wrong.stderr == "error: --messages: Input should be a valid list\n"
    assert queued(r, "chat") == 1


# ------------------------------------------------------------------ validation: exit 2, nothing enqueued


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["create-conversation", "--user", "u1", "--title", "x" * 201],
            ["--title: String should have at most 200 characters"],
        ),
        (["create-conversation"], ["--user: is required"]),
        (["create-conversation", "--user", ""], ["--user: must not be empty"]),
        (
            ["create-conversation", "--user", "u", "--personality-mode", "grumpy"],
            [
                "--personality-mode: Input should be 'helpful', 'creative', 'professional', 'casual', "
                "'sarcastic' or 'technical'"
            ],
        ),
        (
            ["save-message", "--conversation", "nope", "--user", "u", "--role", "bot", "--content", ""],
            [
                "--conversation: Input should be a valid UUID",
                "--role: Input should be 'user', 'assistant' or 'system'",
                "--content: must not be empty or whitespace only",
            ],
        ),
        (
            ["save-message", "--conversation", CONV, "--user", "u", "--role", "user", "--content", "x" * 10_001],
            ["--content: String should have at most 10000 characters"],
        ),
        (["update-conversation", "--conversation", CONV, "--user", "u"], ["--title: is required"]),
        (["delete-conversation", "--user", "u"], ["--conversation: is required"]),
        (
            ["get-conversations", "--user", "u", "--limit", "101"],
            ["--limit: Input should be less than or equal to 100"],
        ),
        (["get-conversations", "--user", "u", "--limit", "0"], ["--limit: Input should be greater than or equal to 1"]),
        (["get-conversations", "--user", "u", "--limit", "ten"], ["--limit: Input should be a valid integer"]),
        (
            ["get-messages", "--conversation", CONV, "--user", "u", "--limit", "201"],
            ["--limit: Input should be less than or equal to 200"],
        ),
        (["canary"], ["--queue: required for canary (one of chat, database, audit)"]),
        (["canary", "--queue", "nope"], ["--queue: unknown queue 'nope' (one of chat, database, audit)"]),
        (
            ["canary", "--queue", "chat", "--sleep-seconds", "301", "--fail-times", "-1"],
            [
                "--sleep-seconds: Input should be less than or equal to 300",
                "--fail-times: Input should be greater than or equal to 0",
            ],
        ),
        (
            ["create-conversation", "--user", "u", "--queue", "chat"],
            ["--queue: create-conversation jobs run on the 'database' queue, not 'chat'"],
        ),
        (["create-conversation", "--user", "u", "--job-id", "a b"], ["--job-id: 'a b' is not a valid job id"]),
        (["create-conversation", "--user", "u", "--in", "soon"], ["--in: 'soon' is not a delay"]),
        (["create-conversation", "--user", "u", "--in", "0s"], ["--in: the delay must be more than 0"]),
        (
            ["create-conversation", "--user", "u", "--at", "2001-01-01T00:00:00Z"],
            ["--at: 2001-01-01T00:00:00Z is in the past"],
        ),
        (["create-conversation", "--user", "u", "--at", "tomorrow"], ["--at: 'tomorrow' is not a time"]),
        (
            ["create-conversation", "--user", "u", "--in", "10m", "--at", "2999-01-01T00:00"],
            ["--in/--at: give one of them, not both"],
        ),
        (
            ["create-conversation", "--user", "u", "--wait", "--timeout", "0"],
            ["--timeout: must be more than 0 seconds"],
        ),
    ],
)
def test_validation_errors_exit_2_and_enqueue_nothing(cli, r, args, expected):
    result = cli("enqueue", *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), lines
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(f"error: {want}"), line
    assert nothing_enqueued(r)


def test_every_bad_field_gets_its_own_line(cli, r):
    result = cli(
        "enqueue",
        "save-message",
        "--conversation",
        "x",
        "--role",
        "x",
        "--content",
        "",
        "--personality-mode",
        "x",
        "--job-id",
        "!",
        "--in",
        "x",
    )
    assert result.exit_code == 2
    named = sorted(line.split(":")[1].strip() for line in result.stderr.splitlines())
    assert named == sorted(
        ["--conversation", "--user", "--role", "--content", "--personality-mode", "--job-id", "--in"]
    )
    assert nothing_enqueued(r)


def test_title_of_201_chars_mentions_title_and_200(cli, r):
    result = cli("enqueue", "create-conversation", "--user", "u1", "--title", "x" * 201)
    assert result.exit_code == 2
    assert "title" in result.stderr and "200" in result.stderr
    assert queued(r) == 0


def test_unknown_option_is_a_usage_error(cli, r):
    result = cli("enqueue", "create-conversation", "--user", "u1", "--colour", "red")
    assert result.exit_code == 2
    assert "--colour" in result.stderr
    assert nothing_enqueued(r)


def test_validation_happens_before_redis(cli, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    result = cli("enqueue", "create-conversation", "--title", "x" * 201)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --user: is required",
        "error: --title: String should have at most 200 characters",
    ]


def test_unreachable_redis_is_exit_1(cli, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    result = cli("enqueue", "create-conversation", "--user", "u1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach Redis")


# ------------------------------------------------------------------ job ids and scheduling


def test_same_job_id_twice_reports_the_existing_job(cli, r):
    first = cli("enqueue", "create-conversation", "--user", "u1", "--job-id", "once")
    assert (first.exit_code, first.stdout) == (0, "once\n")
    second = cli("enqueue", "create-conversation", "--user", "u2", "--job-id", "once")
    assert (second.exit_code, second.stdout) == (0, "once\n")
    assert second.stderr == "warning: job once already exists; nothing was enqueued\n"
    as_json = cli("enqueue", "create-conversation", "--user", "u2", "--job-id", "once", "--json")
    assert json.loads(as_json.stdout)["status"] == "exists"
    assert queued(r) == 1
    assert fetch(r, "once").kwargs["userId"] == "u1"


def test_in_schedules_with_the_right_score(cli, r):
    before = time.time()
    result = cli("enqueue", "create-conversation", "--user", "u1", "--in", "10m", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "scheduled" and data["scheduled_for"].endswith("Z")
    score = r.zscore("rq:scheduled:database", data["id"])
    assert before + 600 <= score <= time.time() + 600
    assert queued(r) == 0
    assert fetch(r, data["id"]).get_status() == "scheduled"


def test_at_schedules_at_that_time(cli, r):
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    result = cli("enqueue", "canary", "--queue", "audit", "--at", when.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "-q")
    assert result.exit_code == 0, result.stderr
    assert r.zscore("rq:scheduled:audit", result.stdout.strip()) == when.timestamp()


def test_when_parsing():
    now = dt.datetime(2030, 5, 6, 12, 0, tzinfo=dt.UTC)
    assert _when.parse_delay("90") == dt.timedelta(seconds=90)
    assert _when.parse_delay("1h30m") == dt.timedelta(minutes=90)
    assert _when.parse_delay("2d") == dt.timedelta(days=2)
    assert _when.parse_at("13:30", now) == dt.datetime(2030, 5, 6, 13, 30, tzinfo=dt.UTC)
    assert _when.parse_at("2030-05-06T15:00+02:00", now) == dt.datetime(2030, 5, 6, 13, 0, tzinfo=dt.UTC)
    assert _when.parse_at("2030-05-07T09:00", now) == dt.datetime(2030, 5, 7, 9, 0, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="today has passed"):
        _when.parse_at("11:59", now)
    with pytest.raises(ValueError, match="in the past"):
        _when.parse_at("2030-05-06T13:00+02:00", now)
    assert _when.run_at(None, None, now) == (None, [])


def test_option_naming():
    assert [option_name(n) for n in ("user_id", "conversation_id", "guild_id", "personality_mode", "timeout")] == [
        "--user",
        "--conversation",
        "--guild",
        "--personality-mode",
        "--field-timeout",
    ]
    assert (kind_of(list[str]), kind_of(dict[str, int] | None), kind_of(int), kind_of(object)) == (
        "json",
        "json",
        "text",
        "text",
    )


# ------------------------------------------------------------------ positional field and rate limit hook


class Ask(Payload):
    prompt: str = Field(min_length=1, max_length=20)
    user_id: str = Field(min_length=1)


@pytest.fixture
def ask_cli(monkeypatch) -> Iterator:
    """A fresh `slimyq` with a rate-limited job type whose `prompt` is positional."""
    jt = registry.JobType("ask_bot", "chat", "tests.nowhere.ask", Ask, positional="prompt", rate_limited=True)
    monkeypatch.setitem(registry.JOBS, jt.name, jt)
    app = typer.Typer(cls=SlimyqGroup)

    @app.callback()
    def root(ctx: typer.Context) -> None:
        from slimyq.app import App

        ctx.obj = App()

    app.add_typer(enqueue.build(), name="enqueue")
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input, env={"NO_COLOR": "1", "COLUMNS": "120"})

    yield run


def test_positional_argument_and_stdin(ask_cli, r):
    first = ask_cli("enqueue", "ask-bot", "hello", "--user", "u1", "-q")
    assert first.exit_code == 0, first.stderr
    assert fetch(r, first.stdout.strip()).kwargs == {"prompt": "hello", "userId": "u1"}
    piped = ask_cli("enqueue", "ask-bot", "-", "--user", "u1", "-q", input="from stdin\n")
    assert fetch(r, piped.stdout.strip()).kwargs["prompt"] == "from stdin"
    as_option = ask_cli("enqueue", "ask-bot", "--prompt", "opt", "--user", "u1", "-q")
    assert fetch(r, as_option.stdout.strip()).kwargs["prompt"] == "opt"
    too_long = ask_cli("enqueue", "ask-bot", "x" * 21, "--user", "u1")
    assert (too_long.exit_code, too_long.stderr) == (2, "error: PROMPT: String should have at most 20 characters\n")
    both = ask_cli("enqueue", "ask-bot", "a", "--prompt", "b", "--user", "u1")
    assert both.exit_code == 2
    assert queued(r, "chat") == 3


def limit(requests: int) -> None:
    with open("slimyq.toml", "w") as fh:
        fh.write(f"[rate_limit]\nrequests = {requests}\nwindow = 60\n")


def test_rate_limited_types_exit_75_and_a_duplicate_takes_no_slot(ask_cli, r):
    limit(2)
    assert ask_cli("enqueue", "ask-bot", "one", "--user", "u1", "--job-id", "j1").exit_code == 0
    for _ in range(3):  # the same job again: nothing enqueued, nothing counted
        again = ask_cli("enqueue", "ask-bot", "one", "--user", "u1", "--job-id", "j1")
        assert again.exit_code == 0 and "already exists" in again.stderr
    assert ask_cli("enqueue", "ask-bot", "two", "--user", "u1").exit_code == 0
    limited = ask_cli("enqueue", "ask-bot", "three", "--user", "u1")
    assert limited.exit_code == 75
    assert limited.stderr.startswith("error: rate limited, retry in ") and limited.stderr.endswith(" s\n")
    assert queued(r, "chat") == 2
    assert int(r.get("slimyq:rl:u1") or 0) == 2
    assert ask_cli("enqueue", "ask-bot", "other", "--user", "u2").exit_code == 0


def test_bulk_is_refused_before_anything_is_enqueued(ask_cli, r, tmp_path):
    limit(3)
    assert ask_cli("enqueue", "ask-bot", "one", "--user", "a").exit_code == 0
    lines = [{"type": "ask_bot", "payload": {"prompt": "p", "userId": u}} for u in ("a", "b", "a", "a")]
    lines.insert(0, {"type": "create_conversation", "payload": {"userId": "c"}})
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = ask_cli("enqueue", "--file", str(path))
    assert result.exit_code == 75, result.stderr
    assert "rate limited, retry in" in result.stderr
    assert queued(r, "chat") == 1 and queued(r, "database") == 0
    assert (int(r.get("slimyq:rl:a") or 0), int(r.get("slimyq:rl:b") or 0)) == (1, 0)
    r.delete("slimyq:rl:a")
    result = ask_cli("enqueue", "--file", str(path))
    assert result.exit_code == 0, result.stderr
    assert queued(r, "chat") == 5 and queued(r, "database") == 1
    assert (int(r.get("slimyq:rl:a") or 0), int(r.get("slimyq:rl:b") or 0)) == (3, 1)


# ------------------------------------------------------------------ --wait against a simulated worker


def complete_when_enqueued(r, job_id: str, fields: dict[str, str]) -> threading.Thread:
    """Act like a worker: once the job exists, write RQ's result stream entry for it."""

    def work() -> None:
        deadline = time.monotonic() + 5
        while not r.exists(keys.job(job_id)) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        r.hset(keys.job(job_id), "status", fields.pop("_status"))
        r.xadd(keys.results(job_id), fields)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_wait_prints_the_result(cli, r):
    job_id = f"w-{uuid.uuid4().hex[:8]}"
    value = {"success": True, "conversationId": CONV, "createdAt": "2030-01-01T00:00:00.000Z"}
    thread = complete_when_enqueued(
        r, job_id, {"_status": "finished", "type": "1", "return_value": codec.encode_return_value(value)}
    )
    result = cli(
        "enqueue", "create-conversation", "--user", "u1", "--job-id", job_id, "--wait", "--timeout", "5", "--json"
    )
    thread.join()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == value
    table = cli("enqueue", "create-conversation", "--user", "u1", "--job-id", job_id, "--wait", "--timeout", "5")
    assert table.exit_code == 0  # the existing job's result, at once
    assert "conversationId" in table.stdout and CONV in table.stdout
    assert table.stderr == f"warning: job {job_id} already exists; nothing was enqueued\n"


def test_wait_for_a_list_result_shows_a_table(cli, r):
    rows = [{"id": CONV, "title": "Chat", "messageCount": 150}]
    thread = complete_when_enqueued(
        r, "list-1", {"_status": "finished", "type": "1", "return_value": codec.encode_return_value(rows)}
    )
    result = cli("enqueue", "get-conversations", "--user", "u1", "--job-id", "list-1", "--wait", "--timeout", "5")
    thread.join()
    assert result.exit_code == 0, result.stderr
    assert "messageCount" in result.stdout and "150" in result.stdout


def test_wait_exits_1_with_the_jobs_error(cli, r):
    text = "Traceback (most recent call last):\n  File ...\n"
    text += "slimyq.jobs.base.AccessDenied: Conversation not found or access denied\n"
    thread = complete_when_enqueued(
        r, "f-1", {"_status": "failed", "type": "2", "exc_string": codec.encode_exc_string(text)}
    )
    result = cli(
        "enqueue",
        "delete-conversation",
        "--conversation",
        CONV,
        "--user",
        "u1",
        "--job-id",
        "f-1",
        "--wait",
        "--timeout",
        "5",
    )
    thread.join()
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: job f-1 failed: Conversation not found or access denied\n"


def test_wait_timeout_exits_1_saying_still_queued(cli, r):
    started = time.monotonic()
    result = cli("enqueue", "canary", "--queue", "database", "--job-id", "slow-1", "--wait", "--timeout", "1")
    assert result.exit_code == 1
    assert time.monotonic() - started < 5
    assert result.stderr.startswith("error: job slow-1 did not finish within 1 s: still queued")
    assert queued(r) == 1  # the job stays on its queue


# ------------------------------------------------------------------ start-up


def test_enqueue_help_imports_no_heavy_modules():
    code = (
        "import sys\n"
        "from slimyq.cli import app\n"
        "for args in (['--help'], ['enqueue', '--help'], ['enqueue', 'create-conversation', '--help']):\n"
        "    try:\n"
        "        app(args, prog_name='slimyq')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted({'peewee', 'rq', 'openai', 'redis'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert "create-conversation" in out and "--personality-mode" in out
