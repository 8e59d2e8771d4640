"""Fixtures for the job history tests: a migrated database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from collections.abc import Iterator

import peewee
import pytest

from slimyq.db import connect_url, database_proxy, migrate


@pytest.fixture
def db(database_url: str) -> Iterator[peewee.Database]:
    database = connect_url(database_url)
    migrate(database)
    database_proxy.initialize(database)
    yield database
    database.close()
