"""Registers the ``chat`` queue's job types. Imported lazily by the registry.

Only pydantic-level modules here: enqueueing a chat job must not import openai or peewee (the
handlers in :mod:`slimyq.jobs.chat` are named by dotted path and imported by the worker).
"""

from __future__ import annotations

from slimyq.jobs import registry
from slimyq.jobs.registry import JobType
from slimyq.payloads.chat import BulkMessages, ChatBotInteraction, MessageValidation

_CHAT = "slimyq.jobs.chat"

for _job_type in (
    JobType(
        "chat_bot_interaction",
        "chat",
        f"{_CHAT}.chat_bot_interaction",
        ChatBotInteraction,
        positional="prompt",
        rate_limited=True,
        help="Ask the bot: an OpenAI chat completion (or the fallback reply without an API key).",
    ),
    JobType(
        "message_validation",
        "chat",
        f"{_CHAT}.message_validation",
        MessageValidation,
        help="Validate one chat message {role, content}: role, length and unsafe content.",
    ),
    JobType(
        "bulk_messages",
        "chat",
        f"{_CHAT}.bulk_messages",
        BulkMessages,
        help="Validate many chat messages; reports each one and a summary.",
    ),
):
    registry.register(_job_type)
