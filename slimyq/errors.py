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


class ValidationFailed(UsageError):
    """A payload failed validation; ``problems`` holds one ``field: problem`` line each."""

    def __init__(self, problems: list[str], prefix: str = "") -> None:
        self.problems = problems
        lines = [f"{prefix}{p}" for p in problems]
        super().__init__("\n".join(lines))


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


class Interrupted(SlimyqError):
    exit_code = 130
