"""Payloads of the ``database`` queue (conversations and messages)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from slimyq.payloads.common import Payload
from slimyq.payloads.fields import Text, Title, UserId

PersonalityMode = Literal["helpful", "creative", "professional", "casual", "sarcastic", "technical"]


class CreateConversation(Payload):
    user_id: UserId
    title: Title = None
    personality_mode: PersonalityMode = "helpful"


class SaveMessage(Payload):
    conversation_id: UUID
    user_id: UserId
    role: Literal["user", "assistant", "system"]
    content: Text = Field(max_length=10_000)
    personality_mode: PersonalityMode | None = None


class UpdateConversation(Payload):
    conversation_id: UUID
    user_id: UserId
    title: Title = Field(description="the new title; empty clears it")


class DeleteConversation(Payload):
    conversation_id: UUID
    user_id: UserId


class GetConversations(Payload):
    user_id: UserId
    limit: int = Field(default=20, ge=1, le=100)


class GetMessages(Payload):
    conversation_id: UUID
    user_id: UserId
    limit: int = Field(default=100, ge=1, le=200)
