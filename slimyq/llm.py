"""The OpenAI side of the chat queue: one client per process, the call, and what its errors mean.

The ``openai`` SDK is imported on first use only (enqueueing never pays for it). Its own retries
are switched off (``max_retries=0``): a transient failure is raised as
:class:`OpenAITransientError` and the job's retry mechanism retries it with backoff, honouring
``retry_after`` when the server sent ``Retry-After``. Anything retrying cannot fix is an
:class:`OpenAIPermanentError` (``openai_error``), failed at once.

The API key never leaves this module in a message: every text built from an SDK error goes through
:func:`slimyq.redact.redact_text` with the key.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from slimyq.jobs.base import PermanentError
from slimyq.redact import redact_text, redact_url

if TYPE_CHECKING:
    from openai import OpenAI

    from slimyq.config import ChatSettings, Settings

log = logging.getLogger(__name__)

GUILD_PROMPT = "You are Slimy AI, helping guild {guild_id}. Keep replies short and avoid sensitive data."
DEFAULT_PROMPT = "You are Slimy AI, a concise assistant for Slimy guilds."
FALLBACK_REPLY = "OpenAI integration is not configured yet, but your message was received."
EMPTY_REPLY = "I'm not sure how to reply just yet, but I'm listening."
DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_RETRY_AFTER = 3600.0  # seconds: a longer Retry-After is clamped
_TRANSIENT_STATUS = frozenset({408, 409, 429})


class OpenAITransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection). The worker retries the job.

    ``retry_after``: seconds the server asked us to wait (``Retry-After``), or None.
    ``status``: the HTTP status, or None for timeouts and connection errors.
    """

    error_type = "openai_transient"

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class OpenAIPermanentError(PermanentError):
    """An API error retrying cannot fix (bad request, auth, not found, quota): no retry."""

    error_type = "openai_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def chat_mode(settings: Settings) -> str:
    """``openai`` when an API key is configured, else ``fallback`` (for config show / check)."""
    return "openai" if settings.chat.api_key else "fallback"


def system_prompt(guild_id: str | None) -> str:
    return GUILD_PROMPT.format(guild_id=guild_id) if guild_id else DEFAULT_PROMPT


# ---------------------------------------------------------------- the client, once per process

_clients: dict[tuple[str, str, float], OpenAI] = {}
_clients_lock = threading.Lock()


def client(chat: ChatSettings) -> OpenAI:
    """The process's client for these settings (created on first use, then reused)."""
    key = (chat.base_url, chat.api_key, chat.request_timeout)
    found = _clients.get(key)
    if found is not None:
        return found
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            from openai import OpenAI

            found = OpenAI(
                api_key=chat.api_key,
                base_url=chat.base_url or DEFAULT_BASE_URL,
                timeout=chat.request_timeout,
                max_retries=0,  # the job retries, with backoff: never both
            )
            _clients[key] = found
    return found


def _forget_clients_in_child() -> None:
    # A forked child must not share the parent's connections: drop (do not close) the clients.
    global _clients_lock
    _clients.clear()
    _clients_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_clients_in_child)


def reset_clients() -> None:
    """Close and forget every cached client (tests, or after changing settings in-process)."""
    with _clients_lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


# ---------------------------------------------------------------- the call


def complete(chat: ChatSettings, system: str, prompt: str) -> str:
    """The completion's text for ``prompt`` ("" when the model sent nothing).

    The request goes through the SDK's client (its authentication, timeout, connection pool and
    error mapping) as ``client.post`` with the raw body back, read here: the SDK's typed
    ``chat.completions.create`` walks the request's type hints and builds pydantic models of the
    reply, about a millisecond of CPU per call that a worker running five at once pays in latency
    (the GIL) and that this job, wanting one string and two token counts, does not need.

    Raises :class:`OpenAITransientError` or :class:`OpenAIPermanentError` (a reply that is not a
    chat completion is one); never returns or raises anything carrying the API key.
    """
    import openai

    from slimyq.obs import llm_metrics

    body = {
        "model": chat.model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "max_tokens": chat.max_tokens,
        "temperature": chat.temperature,
    }
    with llm_metrics.measured(chat) as call:  # duration, outcome, tokens (and a span, with tracing)
        try:
            raw = client(chat).post("/chat/completions", cast_to=bytes, body=body)
        except openai.OpenAIError as exc:
            raise classify(exc, chat) from None
        text, usage = read_completion(raw, chat)
        call.completed(*usage)
    return text


def read_completion(raw: bytes, chat: ChatSettings) -> tuple[str, tuple[int, int, str | None]]:
    """The first choice's text ("" when there is no choice or its content is null) and the usage
    (prompt tokens, completion tokens, the model that answered) of a chat completion's JSON body,
    or :class:`OpenAIPermanentError` naming what is not as the API documents it (a proxy's page,
    another service at ``OPENAI_BASE_URL``: a retry would send, and be billed for, the same)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        raise _unreadable(chat, "the body is not a JSON object")
    choices = data.get("choices")
    if choices is None or choices == []:
        text = ""
    elif not isinstance(choices, list):
        raise _unreadable(chat, f"choices is {_kind(choices)}, not a list")
    else:
        first = choices[0]
        if not isinstance(first, dict):
            raise _unreadable(chat, f"choices[0] is {_kind(first)}, not an object")
        message = first.get("message")
        if not isinstance(message, dict | None):
            raise _unreadable(chat, f"choices[0].message is {_kind(message)}, not an object")
        content = (message or {}).get("content")
        if not isinstance(content, str | None):
            raise _unreadable(chat, f"choices[0].message.content is {_kind(content)}, not text")
        text = (content or "").strip()
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    model = data.get("model")
    return text, (_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")),
                  model if isinstance(model, str) else None)


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _kind(value: Any) -> str:
    name = type(value).__name__
    return "null" if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _unreadable(chat: ChatSettings, what: str) -> OpenAIPermanentError:
    return _logged(OpenAIPermanentError(
        _clean(chat, f"{_where(chat)} answered with something that is not a chat completion: {what}")))


def _where(chat: ChatSettings) -> str:
    return redact_url(chat.base_url) or "the OpenAI API"


def _clean(chat: ChatSettings, text: str) -> str:
    return redact_text(text, [chat.api_key] if chat.api_key else [])


_E = TypeVar("_E", bound=OpenAITransientError | OpenAIPermanentError)


def _logged(err: _E) -> _E:
    log.warning("chat completion failed (%s): %s", err.error_type, err)
    return err


def classify(exc: BaseException, chat: ChatSettings) -> OpenAITransientError | OpenAIPermanentError:
    """Turn an SDK error into a transient (retry) or permanent (``openai_error``) one, redacted."""
    import openai

    def clean(text: str) -> str:
        return _clean(chat, text)

    where = _where(chat)
    if isinstance(exc, openai.APITimeoutError):
        err: OpenAITransientError | OpenAIPermanentError = OpenAITransientError(
            clean(f"OpenAI request timed out after {chat.request_timeout:g} s ({where})")
        )
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {cause}" if cause else ""
        err = OpenAITransientError(clean(f"cannot reach {where}{detail}"))
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        text = clean(f"OpenAI API error {status}: {_message_of(exc)}")
        code = getattr(exc, "code", None)
        if (status in _TRANSIENT_STATUS or status >= 500) and code != "insufficient_quota":
            err = OpenAITransientError(text, retry_after=retry_after(exc.response.headers), status=status)
        else:
            err = OpenAIPermanentError(text, status=status)
    else:
        err = OpenAIPermanentError(clean(f"OpenAI error: {type(exc).__name__}: {exc}"))
    return _logged(err)


def _message_of(exc: Any) -> str:
    """The server's own error message when it sent one, else the SDK's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return str(getattr(exc, "message", "") or exc)


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return _clamp(float(ms) / 1000)
    except (TypeError, ValueError):
        pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return _clamp(float(raw))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return _clamp((when - dt.datetime.now(dt.UTC)).total_seconds())


def _clamp(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
