"""The exception hierarchy. Each error carries the exit code the CLI ends with.

Messages are one line, say what happened and how to fix it, and never contain secrets:
callers pass URLs through :func:`slimyq.redact.redact_url` before building a message.
"""

from __future__ import annotations


class SlimyqError(Exception):
    """Operational failure: a server unreachable, a job failed, something not found."""

    exit_code = 1


class UsageError(SlimyqError):
    """Bad flags, configuration or payload. Nothing was enqueued or written."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key has a bad value or is unknown."""


class ValidationFailed(UsageError, ValueError):
    """A payload failed validation; ``problems`` holds one ``field: problem`` line each, and
    ``errors`` the same as ``{"field": ..., "message": ...}`` dicts. Nothing was enqueued.

    Importable as :class:`slimyq.ValidationError` (it is a :class:`ValueError`).
    """

    def __init__(self, problems: list[str], prefix: str = "") -> None:
        self.problems = problems
        lines = [f"{prefix}{p}" for p in problems]
        super().__init__("\n".join(lines))

    @property
    def errors(self) -> list[dict[str, str]]:
        """One entry per problem: the field as the caller named it (``title``, ``items.0.name``,
        ``--user-id``, ``item 3: userId``) and what is wrong with it."""
        out = []
        for line in self.problems:
            field, sep, message = line.partition(": ")
            if field.split(" ")[0] in ("item", "line") and ": " in message:  # a batch's "item 3: userId: ..."
                inner, _, message = message.partition(": ")
                field = f"{field}: {inner}"
            out.append({"field": field, "message": message} if sep else {"field": "", "message": line})
        return out


ValidationError = ValidationFailed


class NotFound(SlimyqError):
    """A job, worker or record does not exist (or is not visible to the asking user)."""


class Unreachable(SlimyqError):
    """Redis or the database cannot be reached."""


class RateLimited(SlimyqError):
    """Too many requests for this user: retry later."""

    exit_code = 75

    def __init__(self, retry_in: int) -> None:
        self.retry_in = retry_in
        super().__init__(f"rate limited, retry in {retry_in} s")

    @property
    def retry_after(self) -> int:
        """Seconds until the user's window ends (an HTTP ``Retry-After``)."""
        return self.retry_in


class JobFailed(SlimyqError):
    """A waited-for job failed for good: ``error`` (its message), ``error_type`` and ``attempts``."""

    def __init__(self, job_id: str, error: str, attempts: int, error_type: str | None = None) -> None:
        self.job_id = job_id
        self.error = error
        self.attempts = attempts
        self.error_type = error_type
        super().__init__(f"job {job_id} failed: {error}")


class JobTimeout(SlimyqError, TimeoutError):
    """A waited-for job did not end in time (a :class:`TimeoutError`); it stays on its queue."""

    def __init__(self, job_id: str, timeout: float, state: str, queue: str = "") -> None:
        self.job_id = job_id
        self.state = state
        where = f"; it is left on the {queue!r} queue (is a worker running? slimyq worker {queue})" if queue else ""
        super().__init__(f"job {job_id} did not finish within {timeout:g} s: still {state}{where}")


class Interrupted(SlimyqError):
    exit_code = 130


def translate(exc: BaseException) -> SlimyqError | None:
    """The slimyq error for a connection error from redis-py or peewee that escaped the layers
    below (``None`` for anything else): the CLI and both clients raise it instead."""
    from slimyq.redact import redact_text

    name = type(exc).__name__
    mod = type(exc).__module__ or ""
    if mod.startswith("redis") and ("Connection" in name or "Timeout" in name):
        return Unreachable(redact_text(f"lost the connection to Redis ({exc}); check that it is running"))
    if mod.startswith("peewee") and name in {"OperationalError", "InterfaceError"}:
        return Unreachable(redact_text(f"database error: {exc}; check that the database is reachable"))
    return None
