"""OpenTelemetry from the enqueue to the job: real CLI and worker processes exporting to a file,
the library inside an application's span (the SDK's in-memory exporter, worker run in this
process), and nothing of OpenTelemetry imported when tracing is off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from fake_openai import FakeOpenAI, fake_openai, reply
from harness import Env, tally

__all__ = ["fake_openai"]  # the fixture, used by name

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SECRET_KEY = "sk-test-TRACE-SECRET-77"
PROMPT = "PROMPT-IN-TRACE-31d"
TITLE = "TITLE-IN-TRACE-8e1"



def spans_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hexid(value: str | None) -> str | None:
    return value[2:] if value else None


def test_a_trace_runs_from_the_cli_enqueue_through_the_worker(env: Env, conn: redis.Redis, fake_openai: FakeOpenAI,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    env.extra.update({"SLIMYQ_TRACING": f"file:{out}", "OPENAI_API_KEY": SECRET_KEY,
                      "OPENAI_BASE_URL": fake_openai.url})
    fake_openai.script(reply("a traced reply"))
    enq = subprocess.run(
        [sys.executable, "-m", "slimyq", "--config", str(env.config), "enqueue", "chat-bot-interaction",
         "--user", "u1", PROMPT, "-q"],
        env={**env.environ, "TRACEPARENT": f"00-{TRACE_ID}-{PARENT}-01"}, cwd=env.root, capture_output=True,
        text=True, timeout=60)
    assert enq.returncode == 0, enq.stderr
    chat_id = enq.stdout.strip()
    done = env.cli("enqueue", "create-conversation", "--user", "u2", "--title", TITLE, "-q")
    assert done.returncode == 0, done.stderr
    row_id = done.stdout.strip()

    from rq.job import Job
    from rq.serializers import JSONSerializer

    meta = Job.fetch(chat_id, connection=conn, serializer=JSONSerializer).meta  # rq's own tools read it
    assert meta["traceparent"].startswith(f"00-{TRACE_ID}-") and meta["type"] == "chat_bot_interaction"
    raw: Any = conn.hget(f"rq:job:{chat_id}", "data")
    assert b"traceparent" not in raw  # metadata, not the payload (the data is compressed: check decoded too)
    import zlib

    assert b"traceparent" not in zlib.decompress(raw)

    worker = env.cli("worker", "chat", "database", "--burst", timeout=120)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert tally(conn, [chat_id, row_id]).finished == 2

    spans = spans_of(out)
    by_id = {hexid(s["context"]["span_id"]): s for s in spans}
    create = next(s for s in spans if s["name"] == "create chat")
    assert create["kind"] == "SpanKind.PRODUCER" and hexid(create["parent_id"]) == PARENT
    assert hexid(create["context"]["trace_id"]) == TRACE_ID
    assert create["attributes"]["messaging.message.id"] == chat_id
    assert meta["traceparent"] == f"00-{TRACE_ID}-{hexid(create['context']['span_id'])}-01"

    process = next(s for s in spans if s["name"] == "process chat")
    assert process["kind"] == "SpanKind.CONSUMER"
    assert hexid(process["parent_id"]) == hexid(create["context"]["span_id"])
    assert hexid(process["context"]["trace_id"]) == TRACE_ID
    attrs = process["attributes"]
    assert (attrs["messaging.system"], attrs["messaging.operation.type"], attrs["messaging.destination.name"],
            attrs["messaging.message.id"], attrs["slimyq.job.attempt"]) == ("rq", "process", "chat", chat_id, 1)

    children = [s for s in spans if hexid(s["parent_id"]) == hexid(process["context"]["span_id"])]
    (llm,) = [s for s in children if s["name"] == "chat gpt-4o-mini"]
    assert llm["kind"] == "SpanKind.CLIENT" and llm["attributes"]["gen_ai.usage.input_tokens"] == 10
    assert llm["attributes"]["gen_ai.usage.output_tokens"] == 5
    assert llm["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    db = [s for s in children if s["attributes"].get("db.system.name") == "sqlite"]
    assert any(s["name"] == "INSERT" and s["attributes"]["db.operation.name"] == "INSERT" for s in db)

    # The conversation job: its own trace (no TRACEPARENT), the same shape.
    row_process = next(s for s in spans if s["name"] == "process database")
    row_create = by_id[hexid(row_process["parent_id"])]
    assert row_create["name"] == "create database" and row_create["parent_id"] is None
    assert any(hexid(s["parent_id"]) == hexid(row_process["context"]["span_id"]) and s["name"] == "INSERT"
               for s in spans)

    text = out.read_text()
    for secret in (SECRET_KEY, PROMPT, TITLE, "a traced reply"):
        assert secret not in text, f"{secret!r} leaked into a span"


def test_a_bad_tracing_setting_is_a_one_line_error(env: Env) -> None:
    env.extra["SLIMYQ_TRACING"] = "zipkin"
    done = env.cli("stats")
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode != 0 and len(lines) == 1 and "SLIMYQ_TRACING" in lines[0], done.stderr


def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off(env: Env) -> None:
    # redis-py imports OpenTelemetry by itself whenever it is installed (redis.observability): the
    # check is that no import of it ever starts in slimyq's code, through enqueue, a job and a scrape.
    code = """
import os, sys, traceback
import slimyq
root = os.path.dirname(slimyq.__file__)
blamed = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            # The code that asked for it: the innermost frame outside the import machinery (and this hook).
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
            if frames and frames[-1].filename.startswith(root):
                blamed.append((name, frames[-1].filename, frames[-1].lineno))
        return None
sys.meta_path.insert(0, Watch())
from typer.testing import CliRunner
from slimyq.cli import app
from slimyq.config import load_settings
from slimyq.runtime.worker import QueueWorker

args = ["--config", sys.argv[1]]
result = CliRunner().invoke(app, [*args, "enqueue", "create-conversation", "--user", "u1", "--title", "t", "-q"])
assert result.exit_code == 0, result.output
settings = load_settings(config_file=sys.argv[1]).settings
assert QueueWorker(settings, "database", concurrency=1, burst=True).run() == 0
result = CliRunner().invoke(app, [*args, "metrics"])
assert result.exit_code == 0, result.output
from slimyq.obs import trace
print(trace.enabled, blamed)
"""
    done = subprocess.run([sys.executable, "-c", code, str(env.config)], env=env.environ, cwd=env.root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False []"


def test_the_library_joins_the_applications_trace(env: Env, conn: redis.Redis,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace as otel
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from slimyq.jobs import registry
    from slimyq.obs import trace
    from slimyq.payloads.common import validate_payload
    from slimyq.producer import EnqueueRequest, enqueue_one
    from slimyq.runtime.worker import QueueWorker

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The application's own provider. OpenTelemetry sets it once per process; the test puts the
    # globals back afterwards, or every later test in this process would trace (and stamp jobs).
    from opentelemetry.util._once import Once

    monkeypatch.setattr(otel, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(otel, "_TRACER_PROVIDER", None)
    otel.set_tracer_provider(provider)
    settings = env.settings()
    jt = registry.get("create_conversation")
    with provider.get_tracer("app").start_as_current_span("POST /conversations") as app_span:
        job = enqueue_one(conn, settings, EnqueueRequest(jt, validate_payload(jt.payload, {"userId": "u9"}),
                                                         "database"))
    app_ctx = app_span.get_span_context()
    (create,) = [s for s in exporter.get_finished_spans() if s.name == "create database"]
    assert create.parent is not None and create.parent.span_id == app_ctx.span_id
    meta = json.loads(conn.hget(f"rq:job:{job.id}", "meta"))  # type: ignore[arg-type]
    version, trace_id, span_id, flags = meta["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{app_ctx.trace_id:032x}", f"{create.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled

    monkeypatch.setattr(trace, "enabled", True)  # the worker's side, here: its spans go to the app's provider
    assert QueueWorker(settings, "database", concurrency=1, burst=True).run() == 0
    spans = exporter.get_finished_spans()
    (process,) = [s for s in spans if s.name == "process database"]
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    assert process.context.trace_id == app_ctx.trace_id
    inserts = [s for s in spans if s.name == "INSERT" and s.parent is not None
               and s.parent.span_id == process.context.span_id]
    assert inserts and inserts[0].attributes is not None and inserts[0].attributes["db.system.name"] == "sqlite"
