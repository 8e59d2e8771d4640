"""The database layer: Peewee models, connections from URLs, and schema migrations.

Importing this package imports peewee (and the drivers lazily, on connect), so the CLI imports it
inside command bodies only.

Typical use in a job handler: ``db = app.db`` (or ``open_database(settings)``) once per process,
then use the models; they are bound through ``database_proxy``.
"""

from slimyq.db.connect import (
    HISTORY_TABLE,
    SCHEMES,
    connect_settings,
    connect_url,
    migrate,
    migration_status,
    open_database,
    pending_migrations,
)
from slimyq.db.fields import DateTimeUSField, JSONTextField
from slimyq.db.models import (
    MODELS,
    PERSONALITY_MODES,
    AuditLog,
    BaseModel,
    Conversation,
    Message,
    database_proxy,
    table_names,
    utcnow,
)

__all__ = [
    "HISTORY_TABLE",
    "MODELS",
    "PERSONALITY_MODES",
    "SCHEMES",
    "AuditLog",
    "BaseModel",
    "Conversation",
    "DateTimeUSField",
    "JSONTextField",
    "Message",
    "connect_settings",
    "connect_url",
    "database_proxy",
    "migrate",
    "migration_status",
    "open_database",
    "pending_migrations",
    "table_names",
    "utcnow",
]
