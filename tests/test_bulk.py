"""Bulk JSONL: line validation with line numbers, two streaming passes, chunked enqueue, and the
`slimyq enqueue --file` command (exit codes, --skip-invalid, stdin, summaries)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from slimyq import bulk
from slimyq.config import load_settings
from slimyq.errors import ValidationFailed
from slimyq.runtime import keys

QUEUES = ["chat", "database", "audit"]


def conv(user: str = "u1", **extra) -> dict:
    return {"type": "create_conversation", "payload": {"userId": user, **extra}}


def write(path: Path, lines: list) -> Path:
    with path.open("wb") as fh:
        for line in lines:
            if isinstance(line, bytes):
                fh.write(line + b"\n")
            elif isinstance(line, str):
                fh.write(line.encode() + b"\n")
            else:
                fh.write(json.dumps(line).encode() + b"\n")
    return path


def problems(raw: bytes | str | dict) -> list[str]:
    parser = bulk.LineParser(QUEUES)
    data = raw if isinstance(raw, bytes) else (raw.encode() if isinstance(raw, str) else json.dumps(raw).encode())
    with pytest.raises(ValidationFailed) as info:
        parser.parse(data)
    return info.value.problems


# ------------------------------------------------------------------ one line


def test_parse_good_lines_accepts_both_type_spellings():
    parser = bulk.LineParser(QUEUES)
    a = parser.parse(json.dumps(conv("alice", title="T")).encode())
    b = parser.parse(json.dumps({"type": "create-conversation", "payload": {"userId": "bob"}, "jobId": "j-1"}).encode())
    assert (a.job_type.name, a.queue, a.payload.user_id, a.job_id) == ("create_conversation", "database", "alice", None)
    assert (b.job_type.name, b.job_id) == ("create_conversation", "j-1")
    canary = parser.parse(b'{"type": "canary", "queue": "audit"}')
    assert (canary.queue, canary.payload.sleep_seconds) == ("audit", 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        (b'{"type": "canary", "payload": {"sleepSeconds": "\xff"}}', "not valid UTF-8 (byte 0xff at position 49)"),
        (b"[1, 2]", 'must be a JSON object like {"type": ..., "payload": {...}}, got an array'),
        ({"payload": {}}, "type: is required"),
        ({"type": 5}, "type: must be a string, got a number"),
        ({"type": "create_convo"}, "type: unknown job type 'create_convo' (known: "),
        (
            {"type": "canary", "queue": "audit", "extra": 1},
            "extra: is not a known field (known: type, payload, jobId, queue)",
        ),
        ({**conv(), "jobId": "bad id"}, "jobId: 'bad id' is not a valid job id (use 1-128 of A-Z a-z 0-9 _ -)"),
        ({"type": "create_conversation", "payload": []}, "payload: must be a JSON object, got an array"),
        ({"type": "canary"}, "queue: required for canary (one of chat, database, audit)"),
        ({**conv(), "queue": "chat"}, "queue: create-conversation jobs run on the 'database' queue, not 'chat'"),
        (conv(title="x" * 201), "title: String should have at most 200 characters"),
        (conv(personalityMode="grumpy"), "personalityMode: Input should be 'helpful', 'creative'"),
        ({"type": "create_conversation", "payload": {}}, "userId: is required"),
        (conv(colour="red"), "colour: is not a known field (known: userId, title, personalityMode)"),
    ],
)
def test_every_line_problem(raw, expected):
    found = problems(raw)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_of_a_line_are_reported():
    found = problems({"type": "save_message", "payload": {"conversationId": "nope", "role": "bot", "content": ""}})
    names = [p.split(":")[0] for p in found]
    assert names == ["conversationId", "userId", "role", "content"]


# ------------------------------------------------------------------ scan and enqueue


def test_scan_counts_and_reports_line_numbers(tmp_path):
    path = write(tmp_path / "jobs.jsonl", [conv("a"), "", "{bad", conv("b", title="x" * 300), conv("c")])
    found = bulk.scan(path, bulk.LineParser(QUEUES))
    assert (found.lines, found.valid, found.invalid) == (4, 2, 2)
    assert found.problems[0].startswith("line 3: not valid JSON")
    assert found.problems[1] == "line 4: title: String should have at most 200 characters"
    assert found.unreported == 0


def test_scan_caps_reported_problems(tmp_path):
    path = write(tmp_path / "bad.jsonl", ["{"] * (bulk.MAX_REPORTED + 20))
    found = bulk.scan(path, bulk.LineParser(QUEUES))
    assert found.invalid == bulk.MAX_REPORTED + 20
    assert len(found.problems) == bulk.MAX_REPORTED
    assert found.unreported == 20


def test_scan_counts_rate_limited_users(tmp_path, monkeypatch):
    from slimyq.jobs import registry

    jt = registry.get("canary")
    monkeypatch.setitem(
        registry.JOBS,
        "create_conversation",
        registry.JobType(
            "create_conversation",
            "database",
            "slimyq.jobs.database.create_conversation",
            registry.get("create_conversation").payload,
            rate_limited=True,
        ),
    )
    path = write(tmp_path / "jobs.jsonl", [conv("a"), conv("b"), conv("a"), {"type": "canary", "queue": "chat"}])
    found = bulk.scan(path, bulk.LineParser(QUEUES))
    assert found.rate_counts == {"a": 2, "b": 1}
    assert jt.rate_limited is False


def test_enqueue_file_in_order_with_dedupe(tmp_path, r):
    settings = load_settings().settings
    lines = [{**conv(f"u{i}"), "jobId": f"job-{i:04d}"} for i in range(1200)]
    lines.insert(600, {**conv("again"), "jobId": "job-0001"})  # a duplicate id: reported as existing
    path = write(tmp_path / "jobs.jsonl", lines)
    seen: list[int] = []
    result = bulk.enqueue_file(r, settings, path, bulk.LineParser(QUEUES), run="r1", advance=seen.append, chunk=500)
    assert (result.enqueued, result.existed, result.invalid, result.next_line) == (1200, 1, 0, 1202)
    assert sum(seen) == 1201 and seen[0] == 500
    ids = [x.decode() for x in r.lrange(keys.queue("database"), 0, -1)]
    assert ids == [f"job-{i:04d}" for i in range(1200)]
    assert Job.fetch("job-0001", connection=r, serializer=JSONSerializer).kwargs["userId"] == "u1"


def test_spooled_copies_and_removes(tmp_path):
    with bulk.spooled(io.BytesIO(b'{"a": 1}\n')) as path:
        assert path.read_bytes() == b'{"a": 1}\n'
    assert not path.exists()


# ------------------------------------------------------------------ the command


def test_cli_bulk_enqueues_everything(cli, r, tmp_path):
    path = write(
        tmp_path / "jobs.jsonl", [conv("a"), {"type": "canary", "queue": "chat", "payload": {"sleepSeconds": 1}}]
    )
    result = cli("enqueue", "--file", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "enqueued 2 jobs (0 already existed)\n"
    assert result.stderr == ""
    assert Queue("database", connection=r, serializer=JSONSerializer).count == 1
    assert Queue("chat", connection=r, serializer=JSONSerializer).count == 1


def test_cli_bad_lines_exit_2_and_enqueue_nothing(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", [conv("a"), conv("b", title="x" * 201), b"\xff\xfe", {"type": "nope"}])
    result = cli("enqueue", "--file", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: line 2: title: String should have at most 200 characters"
    assert lines[1].startswith("error: line 3: not valid UTF-8")
    assert lines[2].startswith("error: line 4: type: unknown job type 'nope'")
    assert lines[3] == f"error: {path}: 3 of 4 lines are invalid; nothing was enqueued"
    assert r.llen(keys.queue("database")) == 0
    assert r.keys("rq:job:*") == []


def test_cli_skip_invalid_enqueues_the_good_ones(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", [conv("a"), "{", conv("c"), conv("d", personalityMode="x")])
    result = cli("enqueue", "--file", str(path), "--skip-invalid")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "enqueued 2 jobs (0 already existed), skipped 2 invalid lines\n"
    assert result.stderr.splitlines()[0].startswith("warning: line 2: not valid JSON")
    assert result.stderr.splitlines()[1].startswith("warning: line 4: personalityMode:")
    assert r.llen(keys.queue("database")) == 2
    one = write(tmp_path / "one.jsonl", [conv("a"), "{"])
    assert cli("enqueue", "--file", str(one), "--skip-invalid").stdout.endswith(", skipped 1 invalid line\n")
    refused = cli("enqueue", "--file", str(one))
    assert refused.stderr.splitlines()[-1] == f"error: {one}: 1 of 2 lines is invalid; nothing was enqueued"


def test_cli_skip_invalid_with_no_valid_line_exits_2(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", ["{", "[]"])
    result = cli("enqueue", "--file", str(path), "--skip-invalid")
    assert result.exit_code == 2
    assert "no line is valid; nothing was enqueued" in result.stderr
    assert r.keys("rq:*") == []


def test_cli_stdin_and_json_summary_with_existing_ids(cli, r):
    text = "\n".join(json.dumps({**conv(f"u{i}"), "jobId": f"s-{i}"}) for i in range(3)) + "\n"
    first = cli("enqueue", "--file", "-", "--json", input=text)
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary == {"enqueued": 3, "existed": 0, "invalid": 0, "lines": 3, "run": summary["run"]}
    again = json.loads(cli("enqueue", "--file", "-", "--format", "json", input=text).stdout)
    assert again == {"enqueued": 0, "existed": 3, "invalid": 0, "lines": 3, "run": again["run"]}
    assert again["run"] != summary["run"]
    assert r.llen(keys.queue("database")) == 3


def test_cli_quiet_prints_nothing(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", [conv("a")])
    result = cli("enqueue", "--file", str(path), "-q")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert r.llen(keys.queue("database")) == 1


def test_cli_default_queue_for_canary_lines(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", [{"type": "canary"}, {"type": "canary", "queue": "chat"}])
    assert cli("enqueue", "--file", str(path)).exit_code == 2
    result = cli("enqueue", "--file", str(path), "--queue", "audit")
    assert result.exit_code == 0, result.stderr
    assert (r.llen(keys.queue("audit")), r.llen(keys.queue("chat"))) == (1, 1)


def test_cli_missing_file_and_empty_file(cli, r, tmp_path):
    missing = cli("enqueue", "--file", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    empty = write(tmp_path / "empty.jsonl", [])
    result = cli("enqueue", "--file", str(empty))
    assert (result.exit_code, result.stdout) == (0, "enqueued 0 jobs (0 already existed)\n")


def test_cli_validates_before_touching_redis(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    path = write(tmp_path / "jobs.jsonl", [conv("a", title="x" * 201)])
    result = cli("enqueue", "--file", str(path))
    assert result.exit_code == 2
    assert "line 1: title" in result.stderr and "cannot reach" not in result.stderr


def test_cli_file_with_a_job_type_is_a_usage_error(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", [conv("a")])
    result = cli("enqueue", "--file", str(path), "create-conversation", "--user", "u1")
    assert result.exit_code == 2
    assert r.keys("rq:*") == []


# ------------------------------------------------------------------ stopping and resuming


def test_lines_without_job_id_get_run_and_line_ids(tmp_path, r):
    settings = load_settings().settings
    path = write(tmp_path / "jobs.jsonl", [conv("a"), "", {**conv("b"), "jobId": "own"}, conv("c")])
    result = bulk.enqueue_file(r, settings, path, bulk.LineParser(QUEUES), run="ab12")
    assert (result.enqueued, result.next_line) == (3, 5)
    assert [x.decode() for x in r.lrange(keys.queue("database"), 0, -1)] == ["bulk-ab12-1", "own", "bulk-ab12-4"]


class _SetAfter(bulk.StopFlag):
    """A stop flag set by the test after the first chunk (as a signal would set it)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    @property
    def is_set(self) -> bool:
        self.checks += 1
        return self.checks >= 1


def test_stop_flag_stops_after_the_chunk_in_flight_and_resume_finishes(tmp_path, r):
    settings = load_settings().settings
    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(25)])
    parser = bulk.LineParser(QUEUES)
    with pytest.raises(bulk.BulkStopped) as info:
        bulk.enqueue_file(r, settings, path, parser, run="cafe", chunk=10, stop=_SetAfter())
    stopped = info.value
    assert (stopped.result.enqueued, stopped.result.next_line, stopped.uncertain) == (10, 11, None)
    assert r.llen(keys.queue("database")) == 10
    rest = bulk.enqueue_file(r, settings, path, parser, run="cafe", start_line=11, chunk=10)
    assert (rest.enqueued, rest.existed) == (15, 0)
    ids = [x.decode() for x in r.lrange(keys.queue("database"), 0, -1)]
    assert ids == [f"bulk-cafe-{n}" for n in range(1, 26)]


def test_a_stop_after_the_last_chunk_is_a_finished_run_not_a_resume_point_past_the_end(tmp_path, r):
    settings = load_settings().settings
    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(20)])
    done = bulk.enqueue_file(r, settings, path, bulk.LineParser(QUEUES), run="fade", chunk=10, start_line=11,
                             stop=_SetAfter())
    assert (done.enqueued, done.next_line) == (10, 21)
    assert r.llen(keys.queue("database")) == 10


def test_resume_past_the_end_of_the_file_is_an_error_naming_its_line_count(cli, r, tmp_path):
    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(3)])
    for line in (4, 9):
        result = cli("enqueue", "--file", str(path), "--resume", f"abc:{line}")
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == (f"error: --resume: line {line} is past the end of {path} (3 lines); "
                                 "nothing was enqueued\n")
    piped = cli("enqueue", "--file", "-", "--resume", "abc:1200", input=path.read_text())
    assert piped.stderr == "error: --resume: line 1,200 is past the end of stdin (3 lines); nothing was enqueued\n"
    assert r.keys("rq:*") == []
    last = cli("enqueue", "--file", str(path), "--resume", "abc:3")
    assert (last.exit_code, last.stdout) == (0, "enqueued 1 job (0 already existed)\n")


def test_resuming_over_lines_already_sent_enqueues_nothing_twice(tmp_path, r):
    """The uncertain chunk of a run cut by an error: it may have landed; resuming skips it by id."""
    settings = load_settings().settings
    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(30)])
    parser = bulk.LineParser(QUEUES)
    bulk.enqueue_file(r, settings, path, parser, run="beef", chunk=10)
    again = bulk.enqueue_file(r, settings, path, parser, run="beef", start_line=11, chunk=10)
    assert (again.enqueued, again.existed) == (0, 20)
    assert r.llen(keys.queue("database")) == 30


def fail_second_chunk(monkeypatch, exc):
    """``bulk.send_chunk`` raising ``exc`` on its second call (a run's second chunk); returns the real one."""
    real = bulk.send_chunk
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(bulk, "send_chunk", flaky)
    return real


def test_an_error_mid_run_reports_the_uncertain_chunk(cli, r, tmp_path, monkeypatch):
    import redis

    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(1200)])
    real = fail_second_chunk(monkeypatch, redis.ConnectionError("Connection closed by server."))
    result = cli("enqueue", "--file", str(path))
    assert result.exit_code == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: bulk enqueue stopped (lost the connection to Redis")
    assert f"500 of 1,200 jobs enqueued (0 already existed) through line 500 of {path}" in line
    assert "lines 501-1,000 were being sent and may be queued" in line
    run = line.rsplit("--resume ", 1)[1].split(":")[0]
    assert line.endswith(f"continue with: slimyq enqueue --file {path} --resume {run}:501")
    monkeypatch.setattr(bulk, "send_chunk", real)
    rest = cli("enqueue", "--file", str(path), "--resume", f"{run}:501")
    assert rest.exit_code == 0, rest.stderr
    assert rest.stdout == "enqueued 700 jobs (0 already existed)\n"
    assert r.llen(keys.queue("database")) == 1200


@pytest.mark.parametrize("bad", ["x", "abc", "abc:", ":3", "abc:0", "ABC!:3", "abc:-1"])
def test_cli_bad_resume_is_a_usage_error(cli, r, tmp_path, bad):
    path = write(tmp_path / "jobs.jsonl", [conv("a")])
    result = cli("enqueue", "--file", str(path), "--resume", bad)
    assert result.exit_code == 2 and "--resume:" in result.stderr
    assert r.keys("rq:*") == []


def test_a_refusal_mid_run_keeps_its_exit_code(cli, r, tmp_path, monkeypatch):
    """A chunk refused for the rate limit (exit 75) still says what is queued and how to continue."""
    from slimyq.errors import RateLimited

    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(700)])
    fail_second_chunk(monkeypatch, RateLimited(12))
    result = cli("enqueue", "--file", str(path))
    assert result.exit_code == 75
    [line] = result.stderr.splitlines()
    assert line.startswith("error: bulk enqueue stopped (rate limited, retry in 12 s): 500 of 700 jobs enqueued")
    assert r.llen(keys.queue("database")) == 500


def test_stdin_is_named_stdin_and_resumes_from_the_same_input(cli, r):
    text = json.dumps(conv("a")) + "\n{\n"
    bad = cli("enqueue", "--file", "-", input=text)
    assert bad.exit_code == 2
    assert bad.stderr.splitlines()[-1] == "error: stdin: 1 of 2 lines is invalid; nothing was enqueued"
    good = "\n".join(json.dumps(conv(f"u{i}")) for i in range(3)) + "\n"
    first = json.loads(cli("enqueue", "--file", "-", "--json", input=good).stdout)
    rest = cli("enqueue", "--file", "-", "--resume", f"{first['run']}:2", input=good)
    assert rest.stdout == "enqueued 0 jobs (2 already existed)\n"
    assert r.llen(keys.queue("database")) == 3


def test_a_second_signal_stops_at_once_and_names_the_lines_in_flight(tmp_path, r, monkeypatch):
    """Ctrl-C twice while a chunk is still being answered: the command stops without waiting for
    it (the answer never comes here) and says which lines may or may not be queued."""
    import os
    import signal
    import threading

    settings = load_settings().settings
    path = write(tmp_path / "jobs.jsonl", [conv(f"u{i}") for i in range(30)])
    real, calls = bulk.send_chunk, []
    answered = threading.Event()  # never set: the second chunk's round trip hangs

    def hanging(*args):
        calls.append(1)
        if len(calls) == 2:
            for delay in (0.05, 0.5):  # two signals (one apart from the other: they don't queue)
                threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
            answered.wait(60)
        return real(*args)

    monkeypatch.setattr(bulk, "send_chunk", hanging)
    with bulk.StopFlag() as stop, pytest.raises(bulk.BulkStopped) as info:
        bulk.enqueue_file(r, settings, path, bulk.LineParser(QUEUES), run="dead", chunk=10, stop=stop)
    stopped = info.value
    assert not answered.is_set() and len(calls) == 2
    assert (stopped.result.enqueued, stopped.result.next_line, stopped.uncertain) == (10, 11, (11, 20))
    assert isinstance(stopped.cause, KeyboardInterrupt)
    answered.set()
