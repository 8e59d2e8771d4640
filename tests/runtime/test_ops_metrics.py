"""Database, OpenAI and rate-limit metrics from real worker and CLI processes, read back through
``slimyq metrics`` (and its textfile) as Prometheus parses them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import redis
from fake_openai import FakeOpenAI, error, fake_openai, reply
from harness import Env, WorkerProc, conversations, enqueue, tally, wait_done, wait_until
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["fake_openai"]  # the fixture, used by name

NEW_FAMILIES = {
    "slimyq_db_query_duration_seconds": "histogram",
    "slimyq_db_errors": "counter",
    "slimyq_db_connections": "gauge",
    "slimyq_openai_request_duration_seconds": "histogram",
    "slimyq_openai_tokens": "counter",
    "slimyq_ratelimit_rejections": "counter",
}



def scrape(env: Env) -> tuple[dict[str, str], list[Sample]]:
    done = env.cli("metrics")
    assert done.returncode == 0, done.stderr
    families = list(text_string_to_metric_families(done.stdout))
    return {f.name: f.type for f in families}, [s for f in families for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_database_and_openai_metrics_add_up_across_processes(env: Env, conn: redis.Redis, fake_openai: FakeOpenAI,
                                                              start: Callable[..., WorkerProc],
                                                              tmp_path: Path) -> None:
    env.extra.update({"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake_openai.url})
    env.reconfigure(queues={"chat": {"attempts": 2, "backoff_base": 0.1}})
    types, _ = scrape(env)
    assert {name: types.get(name) for name in NEW_FAMILIES} == NEW_FAMILIES  # present before anything ran

    fake_openai.script(reply("one"), reply("two"), error(400, "bad request"), error(503, "busy"), reply("three"))
    chats = enqueue(env, "chat_bot_interaction", [{"prompt": f"p{i}", "userId": f"u{i}"} for i in range(4)])
    rows = conversations(env, 6)
    # Two worker processes on the database queue: their sums meet in Redis.
    worker = start("chat", "database", "--processes", "2")
    t = wait_done(conn, chats + rows, 60)
    assert (t.finished, t.failed) == (9, 1), t

    def connections() -> float:
        return value(scrape(env)[1], "slimyq_db_connections", queue="database", backend="sqlite")

    assert wait_until(connections, 30, what="the connection gauge of the live workers") >= 1
    worker.signal(15)
    assert worker.wait(60) == 0, worker.log()[-3000:]

    types, samples = scrape(env)
    inserts = value(samples, "slimyq_db_query_duration_seconds_count", queue="database", backend="sqlite",
                    operation="insert")
    assert inserts >= 6  # one conversation row per job (plus whatever else the jobs insert)
    inf = value(samples, "slimyq_db_query_duration_seconds_bucket", queue="database", backend="sqlite",
                operation="insert", le="+Inf")
    assert inf == inserts
    assert value(samples, "slimyq_db_query_duration_seconds_sum", queue="database", operation="insert") > 0
    assert value(samples, "slimyq_db_errors_total", queue="database") == 0

    ai = "slimyq_openai_request_duration_seconds_count"
    assert value(samples, ai, queue="chat", model="gpt-4o-mini", outcome="ok") == 3
    assert value(samples, ai, queue="chat", outcome="client_error") == 1
    assert value(samples, ai, queue="chat", outcome="server_error") == 1
    # The fake reports 10 prompt and 5 completion tokens per reply.
    assert value(samples, "slimyq_openai_tokens_total", queue="chat", model="gpt-4o-mini", kind="prompt") == 30
    assert value(samples, "slimyq_openai_tokens_total", queue="chat", kind="completion") == 15
    # The chat jobs' audit rows are database statements of the chat queue.
    assert value(samples, "slimyq_db_query_duration_seconds_count", queue="chat", operation="insert") >= 3
    assert tally(conn, chats).finished == 3

    out = tmp_path / "slimyq.prom"
    done = env.cli("metrics", "--output", str(out))
    assert done.returncode == 0, done.stderr
    written = {f.name for f in text_string_to_metric_families(out.read_text())}
    assert set(NEW_FAMILIES) <= written


def test_rate_limit_rejections_are_counted(env: Env) -> None:
    env.config.write_text(env.config.read_text().replace("[worker]", "[rate_limit]\nrequests = 2\n\n[worker]", 1))
    codes = [env.cli("enqueue", "chat-bot-interaction", "--user", "u1", "hello", "-q").returncode for _ in range(4)]
    assert codes == [0, 0, 75, 75]
    _, samples = scrape(env)
    assert value(samples, "slimyq_ratelimit_rejections_total", queue="chat", type="chat_bot_interaction") == 2
    # A bulk file refused by the up-front check: u1's two chat lines count, the other lines do not.
    lines = [{"type": "chat_bot_interaction", "payload": {"userId": "u1", "prompt": f"p{i}"}} for i in range(2)]
    lines += [{"type": "message_validation", "payload": {"message": {"role": "user", "content": "hi"}}}] * 3
    path = env.config.parent / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert env.cli("enqueue", "--file", str(path), "-q").returncode == 75
    _, samples = scrape(env)
    assert value(samples, "slimyq_ratelimit_rejections_total", queue="chat", type="chat_bot_interaction") == 4
    assert value(samples, "slimyq_ratelimit_rejections_total", type="message_validation") == 0
