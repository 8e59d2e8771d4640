"""Payloads of the ``chat`` queue: bot interactions, message validation, bulk validation.

``message_validation`` and ``bulk_messages`` accept *any* JSON for a message on purpose: judging a
message (and saying exactly what is wrong with it, in the contract's words and order) is the job's
work, so a malformed message must reach the handler rather than be refused by pydantic.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

from slimyq.payloads.common import Payload
from slimyq.payloads.fields import Identifier, Required, UserId, no_nul

PROMPT_MAX = 2000
MESSAGE_MAX = 10_000
BULK_MAX = 10_000

Prompt = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=PROMPT_MAX), AfterValidator(no_nul)
]


class ChatBotInteraction(Payload):
    prompt: Prompt
    user_id: UserId
    guild_id: Identifier | None = None
    request_id: Identifier | None = None


class MessageValidation(Payload):
    message: Required  # an object {role, content}; anything else fails as "Invalid message format"


class BulkMessages(Payload):
    messages: list[Any] = Field(max_length=BULK_MAX)
