"""What one OpenAI request took and used: ``slimyq_openai_request_duration_seconds`` (by model and
outcome), ``slimyq_openai_tokens_total`` and, with tracing on, a client span named like
OpenTelemetry's generative-AI conventions (``chat <model>``, ``gen_ai.*`` attributes; never the
prompt or the reply)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from slimyq.obs import ops, trace

if TYPE_CHECKING:
    from slimyq.config import ChatSettings


def outcome_of(exc: BaseException | None) -> str:
    """``ok``, ``timeout``, ``connection_error``, ``rate_limited``, ``server_error``, ``client_error`` or ``error``."""
    if exc is None:
        return "ok"
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        if status == 429:
            return "rate_limited"
        return "server_error" if status >= 500 else "client_error"
    text = str(exc)
    if "timed out" in text:
        return "timeout"
    if text.startswith("cannot reach"):
        return "connection_error"
    return "error"


class Call:
    def __init__(self, model: str) -> None:
        self.model = model
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.response_model: str | None = None

    def completed(self, prompt_tokens: int, completion_tokens: int, response_model: str | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.response_model = response_model


@contextmanager
def measured(chat: ChatSettings) -> Iterator[Call]:
    call = Call(chat.model)
    span = trace.openai_span(chat) if trace.enabled else None
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        yield call
    except BaseException as exc:
        error = exc
        raise
    finally:
        outcome = outcome_of(error)
        ops.openai_request(chat.model, outcome, time.perf_counter() - start, call.prompt_tokens,
                           call.completion_tokens)
        if span is not None:
            trace.end_openai(span, call, outcome, error)
