"""What every handler gets: the job context, permanent errors and small helpers."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import peewee

    from slimyq.config import Settings

R = TypeVar("R")
_NAMESPACE = uuid.UUID("5d0c2a9e-7f3e-4f59-9a53-3b1e8f0c6a11")


class PermanentError(Exception):
    """A failure that retrying cannot fix (validation, ownership, refused job): no retry."""

    error_type = "permanent"


class Interrupted(Exception):
    """Raised into a job's thread from outside: its timeout, or RQ's stop-job command. It says
    nothing about the job's data; a handler that catches exceptions should let it through."""


class AccessDenied(PermanentError):
    error_type = "access_denied"

    def __init__(self, message: str = "Conversation not found or access denied") -> None:
        super().__init__(message)


class InvalidPayload(PermanentError):
    error_type = "validation_error"


class Refused(PermanentError):
    """The job names a function outside the registry, or its data cannot be decoded."""

    error_type = "refused"


@dataclass
class JobContext:
    job_id: str
    queue: str
    attempt: int
    settings: Settings
    db_factory: Any = None  # () -> peewee.Database, opened lazily once per process
    extras: dict[str, Any] = field(default_factory=dict)
    # The job's type is declared ``batchable``: its writes are database work only, so running
    # them again and rolling them back changes nothing (slimyq.jobs.effects.once relies on it).
    rerunnable: bool = False

    @property
    def db(self) -> peewee.Database:
        if self.db_factory is None:
            raise RuntimeError("this job has no database")
        db: peewee.Database = self.db_factory()
        return db

    def derived_id(self, kind: str) -> str:
        """A row id derived from the job id: the same job always produces the same id."""
        return str(uuid.uuid5(_NAMESPACE, f"{self.job_id}:{kind}"))


def rq_callable(handler: Callable[[Any, JobContext], R]) -> Callable[..., R]:
    """The wrapper :func:`slimyq.jobs.registry.job_type` puts around a handler: ``handler(payload,
    ctx)`` for ``slimyq worker``, and also callable as a plain RQ worker calls a job,
    ``handler(**payload_fields)`` (see :mod:`slimyq.jobs.rqcall`)."""

    @functools.wraps(handler)
    def entry(*args: Any, **kwargs: Any) -> R:
        # slimyq's call (tests pass ctx=None); RQ's is fields as keywords (or one dict). Two JSON
        # positional args from an RQ job are neither a payload model nor a JobContext: they go
        # through run_from_rq's validation like any other RQ call.
        if len(args) == 2 and not kwargs and _slimyq_call(args[0], args[1]):
            return handler(args[0], args[1])
        from slimyq.jobs.rqcall import run_from_rq

        result: R = run_from_rq(handler, args, kwargs)
        return result

    return entry


def _slimyq_call(payload: Any, ctx: Any) -> bool:
    if isinstance(ctx, JobContext):
        return True
    import pydantic

    return ctx is None and isinstance(payload, pydantic.BaseModel)


def iso(value: dt.datetime | None) -> str | None:
    """UTC timestamps as the original API sent them: ``2026-11-23T14:21:30.123Z``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def write_transaction(db: peewee.Database) -> Any:
    """A transaction that takes the write lock up front on SQLite (``BEGIN IMMEDIATE``), so a
    read-then-write handler never fails with SQLITE_BUSY on lock upgrade; plain elsewhere. Inside
    a batch it is a savepoint, or the job's own savepoint if the job has run nothing yet
    (:mod:`slimyq.db.savepoints`): the same rollback either way."""
    import peewee as pw

    from slimyq.db.savepoints import adopt

    adopted = adopt(db)
    if adopted is not None:
        return adopted
    if isinstance(db, pw.SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()
