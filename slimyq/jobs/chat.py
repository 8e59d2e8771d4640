"""Handlers of the ``chat`` queue: bot interactions, message validation, bulk validation.

``chat_bot_interaction`` asks OpenAI (through :mod:`slimyq.llm`) or, without an API key, answers
with the fallback text. Each interaction leaves exactly one audit row, whose id is derived from the
job id: a retried or redelivered job inserts nothing new (a success replaces the error row of an
earlier run that failed for good, e.g. a job requeued by hand).

Transient API failures propagate as :class:`slimyq.llm.OpenAITransientError` (the worker retries
them, honouring ``retry_after``); the error row is written on the last attempt only. Permanent
ones (:class:`slimyq.llm.OpenAIPermanentError`, ``openai_error``) write it at once. A success is
recorded under the job id in ``job_effects`` with its audit row: a rerun of a job that already
answered returns that answer without asking OpenAI again.

peewee (the models, job_effects) is imported inside the handlers, openai inside :mod:`slimyq.llm`:
enqueueing imports this module for its job type declarations and must import neither.
"""

from __future__ import annotations

import logging
from typing import Any

from slimyq import llm
from slimyq.config import Settings
from slimyq.jobs.base import InvalidPayload, JobContext, iso, write_transaction
from slimyq.jobs.registry import job_type
from slimyq.payloads.chat import MESSAGE_MAX, BulkMessages, ChatBotInteraction, MessageValidation
from slimyq.payloads.fields import is_blank

log = logging.getLogger(__name__)

ACTION_OK = "chat_bot_interaction"
EFFECT = "chat_bot_interaction"  # its job_effects marker
ACTION_ERROR = "chat_bot_error"
ROLES = ("user", "assistant")
UNSAFE = ("<script", "javascript:", "data:text/html", "vbscript:")


class InvalidMessage(InvalidPayload):
    """A chat message failed validation (no retry); the text is the contract's exact message."""


def preload(settings: Settings) -> None:
    """Called by the worker supervisor before it forks: import the OpenAI SDK and the parts it
    loads lazily (~0.4 s), which the first jobs would otherwise wait for, all of them at once."""
    if settings.chat.api_key:
        from openai import OpenAI

        throwaway = OpenAI(api_key="preload", base_url="http://127.0.0.1:9/v1", max_retries=0)
        throwaway.chat.completions  # noqa: B018 - imports the resource modules
        throwaway.close()


# ---------------------------------------------------------------- chat_bot_interaction


@job_type("chat_bot_interaction", queue="chat", payload=ChatBotInteraction, positional="prompt", rate_limited=True,
          help="Ask the bot: an OpenAI chat completion (or the fallback reply without an API key).")
def chat_bot_interaction(p: ChatBotInteraction, ctx: JobContext) -> dict[str, Any]:
    from slimyq.db.models import utcnow
    from slimyq.jobs.effects import applied, once

    ctx.db  # noqa: B018 - opens the connection for this thread
    done = applied(ctx.job_id, EFFECT)
    if done is not None:  # a rerun of a job that already answered: no second request to OpenAI
        first: dict[str, Any] = done
        return first
    chat = ctx.settings.chat
    used_fallback = not chat.api_key
    if used_fallback:
        reply = llm.FALLBACK_REPLY
    else:
        try:
            reply = llm.complete(chat, llm.system_prompt(p.guild_id), p.prompt) or llm.EMPTY_REPLY
        except llm.OpenAIPermanentError as exc:
            _audit_error(p, ctx, str(exc))
            raise
        except llm.OpenAITransientError as exc:
            if _last_attempt(ctx):
                _audit_error(p, ctx, str(exc))
            raise
    result = {"success": True, "reply": reply, "usedFallback": used_fallback, "processedAt": iso(utcnow())}

    def apply() -> dict[str, Any]:
        _audit(p, ctx, success=True, details={"prompt": p.prompt[:500], "reply": reply[:1000]})
        return result

    return once(ctx, EFFECT, apply, database_only=True)  # the request to OpenAI is behind us


def _last_attempt(ctx: JobContext) -> bool:
    try:
        attempts = ctx.settings.queue(ctx.queue).attempts
    except Exception:
        attempts = ctx.settings.queue("chat").attempts
    return ctx.attempt >= attempts


def _audit_error(p: ChatBotInteraction, ctx: JobContext, message: str) -> None:
    """The error row; a failure to write it is logged, never hides the API error."""
    try:
        with write_transaction(ctx.db):
            _audit(p, ctx, success=False, details={"prompt": p.prompt[:500], "error": message}, error=message)
    except Exception:
        log.exception("could not write the chat_bot_error audit row for job %s", ctx.job_id)


def _audit(
    p: ChatBotInteraction, ctx: JobContext, *, success: bool, details: dict[str, Any], error: str | None = None
) -> None:
    """The interaction's audit row, inside the caller's transaction: inserted unless it is there
    already; a success replaces an error row of an earlier run, never the other way round."""
    from slimyq.db.models import AuditLog, utcnow

    row_id = ctx.derived_id("audit")
    fields: dict[str, Any] = {
        "user_id": p.user_id,
        "action": ACTION_OK if success else ACTION_ERROR,
        "resource_type": "chat",
        "resource_id": p.guild_id or "global",
        "details": details,
        "request_id": p.request_id,
        "timestamp": utcnow(),
        "success": success,
        "error_message": error,
    }
    if AuditLog.insert(id=row_id, **fields).on_conflict_ignore().as_rowcount().execute():
        return  # the usual case: one statement
    if not success:
        return
    earlier = AuditLog.select(AuditLog.success).where(AuditLog.id == row_id).scalar()
    if earlier is not None and not earlier:  # an error row: this success replaces it
        AuditLog.update(**fields).where(AuditLog.id == row_id).execute()


# ---------------------------------------------------------------- message validation


def validate_message(message: Any) -> dict[str, Any]:
    """The message with its content trimmed, or :class:`InvalidMessage` (checks in contract order)."""
    if not isinstance(message, dict):
        raise InvalidMessage("Invalid message format")
    if message.get("role") not in ROLES:
        raise InvalidMessage("Invalid message role")
    content = message.get("content")
    if not isinstance(content, str) or is_blank(content):  # the same blank as save_message's content
        raise InvalidMessage("Message content is required")
    content = content.strip()
    if len(content) > MESSAGE_MAX:
        raise InvalidMessage(f"Message content too long (max {MESSAGE_MAX} characters)")
    lowered = content.lower()
    if any(pattern in lowered for pattern in UNSAFE):
        raise InvalidMessage("Message contains potentially unsafe content")
    return {**message, "content": content}


@job_type("message_validation", queue="chat", payload=MessageValidation,
          help="Validate one chat message {role, content}: role, length and unsafe content.")
def message_validation(p: MessageValidation, ctx: JobContext) -> dict[str, Any]:
    return {"success": True, "validatedMessage": validate_message(p.message)}


@job_type("bulk_messages", queue="chat", payload=BulkMessages,
          help="Validate many chat messages; reports each one and a summary.")
def bulk_messages(p: BulkMessages, ctx: JobContext) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for index, message in enumerate(p.messages):
        try:
            results.append({"index": index, "success": True, "validatedMessage": validate_message(message)})
        except InvalidMessage as exc:
            results.append({"index": index, "success": False, "error": str(exc)})
    errors = sum(1 for r in results if not r["success"])
    return {
        "success": errors == 0,
        "results": results,
        "summary": {"total": len(results), "success": len(results) - errors, "errors": errors},
    }
