"""Optional OpenTelemetry traces, from the enqueue to the job (``pip install 'slimyq[otel]'``).

Off unless ``SLIMYQ_TRACING`` is set (or the application enqueuing through the library already
uses OpenTelemetry): then, and only then, ``opentelemetry`` is imported. Nothing of it is loaded
otherwise, not even to check whether it is installed.

- **Enqueue** (:func:`stamp`, from the one enqueue path, ``slimyq.producer``): a ``create <queue>``
  span (kind PRODUCER, messaging conventions) per job, child of the caller's current span, and its
  W3C ``traceparent`` (and ``tracestate``) in the job's RQ ``meta`` (JSON, read by rq's own tools
  as a dict), never in its payload. An application with its own tracer provider gets the spans
  in its traces; the CLI makes its own provider from ``SLIMYQ_TRACING`` and continues a
  ``TRACEPARENT`` from its environment.
- **Worker**: a ``process <queue>`` span (kind CONSUMER) per attempt, parented to the job's
  ``traceparent``; a CLIENT span per database statement (``db.system.name``, ``db.operation.name``,
  ``db.query.text`` as peewee sends it: placeholders, never parameter values); and a ``chat <model>``
  CLIENT span for the OpenAI request (``gen_ai.*``, token counts; never the prompt or the reply).

``SLIMYQ_TRACING``: ``otlp`` (the OTLP/HTTP exporter, ``pip install opentelemetry-exporter-otlp``,
configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables) or ``file:PATH`` (one JSON span per
line, appended: for debugging and the tests). ``OTEL_SERVICE_NAME`` names the service (default
``slimyq``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from slimyq.errors import ConfigError

if TYPE_CHECKING:
    from slimyq.config import ChatSettings
    from slimyq.obs.llm_metrics import Call
    from slimyq.runtime.codec import ClaimedJob
    from slimyq.runtime.execute import Result

ENV = "SLIMYQ_TRACING"
MESSAGING_SYSTEM = "rq"
enabled = False  # spans are made in this process (a provider was set up, or the app has its own)
_provider: Any = None
_local = threading.local()


def _api_in_use() -> bool:
    """The application traces with OpenTelemetry itself (the library client in a traced app): its
    API is loaded and a tracer provider is set or a span is current. Merely loaded is not enough:
    redis-py imports it whenever it is installed."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return False
    if getattr(api, "_TRACER_PROVIDER", None) is not None:
        return True
    return bool(api.get_current_span().get_span_context().is_valid)


def configure(spec: str | None = None, service: str = "slimyq") -> bool:
    """Set up a tracer provider from ``SLIMYQ_TRACING`` (or ``spec``); False when tracing is off."""
    global enabled, _provider
    spec = os.environ.get(ENV, "") if spec is None else spec
    if not spec or spec.lower() in ("0", "off", "false", "no"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        raise ConfigError(f"{ENV}={spec}: OpenTelemetry is not installed; pip install 'slimyq[otel]' "
                          f"or unset {ENV}") from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    if spec.startswith("file:"):
        provider.add_span_processor(SimpleSpanProcessor(_file_exporter(spec[len("file:"):])))
    elif spec == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(f"{ENV}=otlp needs the OTLP exporter; pip install opentelemetry-exporter-otlp") from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise ConfigError(f"{ENV}={spec!r} is not 'otlp' or 'file:PATH'; fix it or unset {ENV}")
    trace.set_tracer_provider(provider)
    _provider = provider
    enabled = True
    return True


def _file_exporter(path: str) -> Any:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process's provider
    return ConsoleSpanExporter(out=out, formatter=lambda span: json.dumps(json.loads(span.to_json())) + "\n")


def shutdown() -> None:
    """Export what is buffered (before a worker process exits with ``os._exit``)."""
    if _provider is not None:
        _provider.shutdown()


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("slimyq")


# ---------------------------------------------------------------- enqueue


def stamping() -> bool:
    """New jobs get a ``traceparent`` (:func:`stamp`): this process or its application traces."""
    return enabled or _api_in_use()


def stamp(mapping: dict[str, Any], queue: str, job_id: str) -> None:
    """Put a ``create <queue>`` span's ``traceparent`` into the job hash's ``meta``; for a process
    that is :func:`stamping`."""
    from opentelemetry import propagate, trace

    parent = _env_parent()
    span = _tracer().start_span(f"create {queue}", context=parent, kind=trace.SpanKind.PRODUCER, attributes={
        "messaging.system": MESSAGING_SYSTEM, "messaging.operation.type": "create",
        "messaging.operation.name": "create", "messaging.destination.name": queue, "messaging.message.id": job_id,
    })
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    if "traceparent" in carrier:
        meta = json.loads(mapping["meta"])
        meta.update({k: carrier[k] for k in ("traceparent", "tracestate") if carrier.get(k)})
        mapping["meta"] = json.dumps(meta, separators=(",", ":"))


def _env_parent() -> Any:
    """A ``TRACEPARENT`` in the environment continues the caller's trace (a shell script's, CI's),
    unless the code already runs inside a span."""
    from opentelemetry import trace

    if trace.get_current_span().get_span_context().is_valid or not os.environ.get("TRACEPARENT"):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": os.environ["TRACEPARENT"], "tracestate": os.environ.get("TRACESTATE", "")}
    return TraceContextTextMapPropagator().extract(carrier)


# ---------------------------------------------------------------- worker


def attempt_start(job: ClaimedJob, queue: str) -> Any:
    """Open the attempt's ``process <queue>`` span and make it current in this thread."""
    from opentelemetry import context, propagate, trace

    _detach_leftover()
    carrier = {k: str(job.meta[k]) for k in ("traceparent", "tracestate") if isinstance(job.meta.get(k), str)}
    parent = propagate.extract(carrier) if carrier else None
    from slimyq.runtime import codec

    span = _tracer().start_span(f"process {queue}", context=parent, kind=trace.SpanKind.CONSUMER, attributes={
        "messaging.system": MESSAGING_SYSTEM, "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": queue,
        "messaging.message.id": codec.printable(job.id), "slimyq.job.attempt": job.attempt,
        "slimyq.job.type": str(job.meta.get("type", "unknown")),
    })
    _local.token = context.attach(trace.set_span_in_context(span))
    return span


def _detach_leftover() -> None:
    token = getattr(_local, "token", None)
    if token is not None:  # a timeout raised past attempt_end: forget that attempt's context
        from opentelemetry import context

        _local.token = None
        with contextlib.suppress(Exception):  # detached elsewhere already
            context.detach(token)


def attempt_end(span: Any, result: Result) -> None:
    from opentelemetry.trace import Status, StatusCode

    _detach_leftover()
    span.set_attribute("slimyq.job.type", result.job_type)
    if not result.ok:
        span.set_attribute("error.type", result.error_type or "error")
        span.set_status(Status(StatusCode.ERROR, result.error_type))
    span.end()


def db_span(backend: str, op: str, sql: str, db: Any) -> Any:
    from opentelemetry import trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None  # a statement outside any job (migrations, the history writer): no orphan traces
    attributes: dict[str, Any] = {"db.system.name": backend, "db.operation.name": op.upper(),
                                  "db.query.text": sql[:2000]}
    name = getattr(db, "database", None)
    if isinstance(name, str) and backend != "sqlite":
        attributes["db.namespace"] = name
    return _tracer().start_span(op.upper(), kind=trace.SpanKind.CLIENT, attributes=attributes)


def end(span: Any, exc: BaseException | None = None) -> None:
    if exc is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.end()


def openai_span(chat: ChatSettings) -> Any:
    from opentelemetry import trace

    return _tracer().start_span(f"chat {chat.model}", kind=trace.SpanKind.CLIENT, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": chat.model,
        "gen_ai.request.max_tokens": chat.max_tokens, "gen_ai.request.temperature": chat.temperature,
    })


def end_openai(span: Any, call: Call, outcome: str, exc: BaseException | None) -> None:
    if call.response_model:
        span.set_attribute("gen_ai.response.model", call.response_model)
    if call.prompt_tokens or call.completion_tokens:
        span.set_attribute("gen_ai.usage.input_tokens", call.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", call.completion_tokens)
    span.set_attribute("slimyq.openai.outcome", outcome)
    if exc is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", getattr(exc, "error_type", type(exc).__name__))
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
