"""Fixtures for the job history tests: a migrated database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations




