"""Plain job functions for the plain-RQ side of scripts/bench.py (equivalents of slimyq's jobs).

``insert_conversation`` does what slimyq's create_conversation does (one Peewee insert into the
same table, SQLite or PostgreSQL); ``validate_message`` is the trivial job. The database path comes from the
``BENCH_DATABASE_URL`` environment variable, read at import, as an RQ job module would.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from slimyq.db import connect_url
from slimyq.db.models import Conversation, database_proxy, utcnow
from slimyq.jobs.base import write_transaction

_db = connect_url(os.environ.get("BENCH_DATABASE_URL", "sqlite:///bench.sqlite3"))
database_proxy.initialize(_db)


def insert_conversation(userId: str, title: str | None = None, personalityMode: str = "helpful") -> dict[str, Any]:
    conv_id = str(uuid.uuid4())
    now = utcnow()
    with write_transaction(_db):  # BEGIN IMMEDIATE on SQLite, as slimyq's handlers
        Conversation.insert(id=conv_id, user_id=userId, title=title, personality_mode=personalityMode,
                            created_at=now, updated_at=now).execute()
    return {"success": True, "conversationId": conv_id, "createdAt": now.isoformat()}


def validate_message(message: dict[str, Any]) -> dict[str, Any]:
    content = str(message.get("content", "")).strip()
    if not content:
        raise ValueError("Message content is required")
    return {"success": True, "validatedMessage": {"role": message.get("role"), "content": content}}
