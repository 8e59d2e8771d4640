"""Job and lifecycle log lines of a real ``slimyq worker``: JSON objects, one per line, with the
attempt fields, every outcome, and never payload content, prompts or secrets."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fake_openai import FakeOpenAI, fake_openai, reply
from harness import Env, Valkey, WorkerProc, canaries, enqueue, tally, wait_until

__all__ = ["fake_openai"]  # the fixture, used by name

SECRET_KEY = "sk-test-NEVER-LOGGED-4242"
PROMPT = "my PROMPT-CONTENT-7f3a is private"
TITLE = "TITLE-CONTENT-91c2"
DETAILS = "DETAILS-CONTENT-5be0"



def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of the worker's output, each parsed as one JSON object (fails on any other line)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}\n{text[-3000:]}") from None
            assert isinstance(record, dict), line
            out.append(record)
    return out


def ends(records: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "job.end" and r["job_id"] == job_id]


def test_json_lines_for_every_attempt_and_outcome(env: Env, conn: redis.Redis, fake_openai: FakeOpenAI,
                                                  start: Callable[..., WorkerProc]) -> None:
    env.extra.update({"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": fake_openai.url, "SLIMYQ_LOG_FORMAT": "json"})
    env.reconfigure(queues={"database": {"attempts": 2, "backoff_base": 0.1, "timeout": 1},
                            "chat": {"attempts": 2, "backoff_base": 0.1, "timeout": 1}}, history=True)
    fake_openai.script(reply("a reply"))
    chat = enqueue(env, "chat_bot_interaction", [{"prompt": PROMPT, "userId": "u1", "requestId": "req-abc-1"}])
    timed_out = enqueue(env, "canary", [{"sleepSeconds": 10}], "chat")
    finished = enqueue(env, "create_conversation", [{"userId": "u1", "title": TITLE}])
    audited = enqueue(env, "log_event", [{"action": "login", "resourceType": "user", "resourceId": "r1",
                                          "requestId": "req-audit-9", "details": {"note": DETAILS}}], "audit")
    flaky = canaries(env, 1, "database", fail=1)
    failed = canaries(env, 1, "database", fail=9)
    refused = canaries(env, 1, "database")
    conn.hset(f"rq:job:{refused[0]}", "data", b"not json")
    worker = start("--burst")
    assert worker.wait(120) == 0, worker.log()[-3000:]
    t = tally(conn, chat + timed_out + finished + audited + flaky + failed + refused)
    assert (t.finished, t.failed) == (4, 3), worker.log()[-3000:]

    output = worker.log()
    records = json_lines(output)
    for r in records:
        assert {"ts", "level", "event", "logger", "msg"} <= r.keys()
        assert r["ts"].endswith("Z")

    (chat_start,) = [r for r in records if r["event"] == "job.start" and r["job_id"] == chat[0]]
    (chat_end,) = ends(records, chat[0])
    worker_names = {r["worker"] for r in records if r["event"] == "worker.start"}
    for r in (chat_start, chat_end):
        assert r["job_type"] == "chat_bot_interaction" and r["queue"] == "chat" and r["attempt"] == 1
        assert r["request_id"] == "req-abc-1" and r["worker"] in worker_names
    assert chat_end["outcome"] == "finished" and chat_end["duration_ms"] > 0 and "error" not in chat_end
    assert [r["request_id"] for r in ends(records, audited[0])] == ["req-audit-9"]
    assert [r["outcome"] for r in ends(records, finished[0])] == ["finished"]
    assert "request_id" not in ends(records, finished[0])[0]  # the payload has no requestId

    assert [(r["attempt"], r["outcome"], r["retrying"]) for r in ends(records, timed_out[0])] == [
        (1, "timed_out", True), (2, "timed_out", False)]
    assert ends(records, timed_out[0])[0]["error_type"] == "timeout"
    assert [r["outcome"] for r in ends(records, flaky[0])] == ["retried", "finished"]
    retry = ends(records, flaky[0])[0]
    assert retry["level"] == "warning" and retry["error_type"] == "canary_failure"
    assert retry["error"] == "canary failure (attempt 1)"
    assert [r["outcome"] for r in ends(records, failed[0])] == ["retried", "failed"]
    assert ends(records, failed[0])[-1]["level"] == "error"
    (refusal,) = ends(records, refused[0])
    assert refusal["outcome"] == "refused" and refusal["error_type"] == "refused" and "\n" not in refusal["error"]
    assert not [r for r in records if r["event"] == "job.start" and r["job_id"] == refused[0]]  # never ran

    events = [r["event"] for r in records]
    assert events[-1] == "supervisor.stop", records[-1]
    assert "supervisor.start" in events, records[:3]
    assert events.count("worker.start") == events.count("worker.stop") == 3
    assert "database.connected" in events

    for secret in (SECRET_KEY, PROMPT, "PROMPT-CONTENT", TITLE, DETAILS, "a reply"):
        assert secret not in output, f"{secret!r} leaked into the worker's log"


def test_text_format_and_the_flag_over_the_environment(env: Env, conn: redis.Redis,
                                                       start: Callable[..., WorkerProc]) -> None:
    env.extra["SLIMYQ_LOG_FORMAT"] = "json"
    ids = canaries(env, 2, "database")
    done = env.cli("--log-format", "text", "worker", "database", "--burst", timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert lines and not any(ln.startswith("{") for ln in lines)
    ends = [ln for ln in lines if " INFO slimyq.job: " in ln and "finished" in ln]
    assert len(ends) == 2
    assert all("outcome=finished" in ln and "job_type=canary" in ln and "queue=database" in ln for ln in ends)
    assert tally(conn, ids).finished == 2


def test_an_unknown_log_format_is_a_one_line_error(env: Env) -> None:
    done = env.cli("--log-format", "xml", "stats")
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "log_format" in lines[0] and "'json'" in lines[0], done.stderr


def test_a_killed_worker_process_is_a_died_event_with_its_jobs(env: Env, conn: redis.Redis,
                                                              start: Callable[..., WorkerProc]) -> None:
    ids = canaries(env, 2, "database", sleep=30)
    worker = start("database")
    wait_until(lambda: conn.zcard("rq:wip:database") == 2, 30, what="both jobs started")
    (child,) = worker.wait_children(1)
    os.kill(child.pid, signal.SIGKILL)
    records: list[dict[str, Any]] = []

    def died() -> bool:
        records[:] = json_lines(worker.log())
        return any(r["event"] == "worker.died" for r in records)

    wait_until(died, 30, what="the worker.died event")
    (event,) = [r for r in records if r["event"] == "worker.died"]
    assert event["level"] == "error" and event["count"] == 2
    assert {j.partition(":")[0] for j in event["job_ids"]} == set(ids)
    wait_until(lambda: conn.zcard("rq:wip:database") == 2, 30, what="the restarted worker to run both jobs")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "supervisor.stopping" in worker.log(), 30, what="supervisor.stopping")
    worker.signal(signal.SIGTERM)  # a second signal (once the first was handled: signals do not queue)
    worker.wait(60)
    records = json_lines(worker.log())
    assert any(r["event"] == "supervisor.stopping" and r["signal"] == "SIGTERM" for r in records)
    assert any(r["event"] == "supervisor.stopping_now" for r in records)


@pytest.fixture
def outage_env(tmp_path: Any, private_valkey: Valkey) -> Env:
    private_valkey.client().flushall()
    return Env.make(tmp_path / "outage", private_valkey.url)


def test_redis_lost_and_back_are_events(outage_env: Env, private_valkey: Valkey,
                                        start: Callable[..., WorkerProc]) -> None:
    worker = start("database", on=outage_env)
    records: list[dict[str, Any]] = []

    def seen(name: str) -> Callable[[], bool]:
        def check() -> bool:
            records[:] = json_lines(worker.log())
            return any(r["event"] == name for r in records)
        return check

    wait_until(seen("worker.start"), 30, what="the worker to start")
    private_valkey.stop()
    wait_until(seen("redis.lost"), 30, what="redis.lost")
    private_valkey.start()
    wait_until(seen("redis.reconnected"), 60, what="redis.reconnected")
    lost = next(r for r in records if r["event"] == "redis.lost")
    assert lost["level"] == "warning" and lost["queue"] == "database" and lost["error_type"]
    back = next(r for r in records if r["event"] == "redis.reconnected")
    assert back["failed_calls"] >= 1
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0


def test_log_level_warning_keeps_retries_and_failures_only(env: Env, conn: redis.Redis) -> None:
    ok = canaries(env, 1, "database")
    bad = canaries(env, 1, "database", fail=5)  # fails every attempt: retried, then failed
    done = env.cli("worker", "database", "--burst", "--log-format", "json", "--log-level", "warning", timeout=120)
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stderr)
    assert not ends(records, ok[0])  # a finished attempt is an info line
    outcomes = [(r["level"], r["outcome"]) for r in ends(records, bad[0])]
    assert outcomes and outcomes[-1] == ("error", "failed"), outcomes
    assert all(o == ("warning", "retried") for o in outcomes[:-1]), outcomes
    assert all(r["level"] != "info" for r in records)
    assert tally(conn, ok + bad).finished == 1


def test_worker_log_format_option_wins_over_the_root_one(env: Env) -> None:
    canaries(env, 1, "database")
    done = env.cli("--log-format", "text", "worker", "database", "--burst", "--log-format", "json", timeout=120)
    assert done.returncode == 0, done.stderr
    assert any(r["event"] == "job.end" for r in json_lines(done.stderr))
    bad = env.cli("worker", "database", "--burst", "--log-format", "xml")
    assert bad.returncode == 2 and "--log-format: 'xml'" in bad.stderr, bad.stderr
