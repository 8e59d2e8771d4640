"""Fixtures for the audit package: a migrated database bound to the models, and a row writer."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import peewee
import pytest

from slimyq.db import AuditLog

AddEntry = Callable[..., str]


@pytest.fixture
def add(db: peewee.Database) -> AddEntry:
    """``add(timestamp, action="login", user="u1", resource_type="session", success=True)``."""

    def write(
        timestamp: dt.datetime,
        action: str = "login",
        user: str | None = "u1",
        resource_type: str = "session",
        success: bool = True,
        **fields: object,
    ) -> str:
        row_id = str(uuid.uuid4())
        AuditLog.insert(
            id=row_id,
            timestamp=timestamp,
            action=action,
            user_id=user,
            resource_type=resource_type,
            resource_id=fields.pop("resource_id", "r1"),
            success=success,
            **fields,
        ).execute()
        return row_id

    return write
