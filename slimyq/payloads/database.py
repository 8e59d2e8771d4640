"""Payloads of the ``database`` queue (conversations and messages)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from slimyq.payloads.common import Payload

PersonalityMode = Literal["helpful", "creative", "professional", "casual", "sarcastic", "technical"]
UserId = Field(min_length=1, max_length=191)


class CreateConversation(Payload):
    user_id: str = UserId
    title: str | None = Field(default=None, max_length=200)
    personality_mode: PersonalityMode = "helpful"


class SaveMessage(Payload):
    conversation_id: UUID
    user_id: str = UserId
    role: Literal["user", "assistant", "system"]
    content: str = Field(min_length=1, max_length=10_000)
    personality_mode: PersonalityMode | None = None


class UpdateConversation(Payload):
    conversation_id: UUID
    user_id: str = UserId
    title: str = Field(max_length=200)


class DeleteConversation(Payload):
    conversation_id: UUID
    user_id: str = UserId


class GetConversations(Payload):
    user_id: str = UserId
    limit: int = Field(default=20, ge=1, le=100)


class GetMessages(Payload):
    conversation_id: UUID
    user_id: str = UserId
    limit: int = Field(default=100, ge=1, le=200)
