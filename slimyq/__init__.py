"""slimyq: run and inspect job queues (RQ workers, enqueue, stats, audit maintenance).

The Python API (see the README's "Python API")::

    from slimyq import Client, AsyncClient, ValidationError, RateLimited, JobFailed

``import slimyq`` stays cheap: the exceptions are defined here, and the clients, the job type
decorator and the payload base are imported on first access (never rq, peewee or openai).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from slimyq.errors import (
    ConfigError,
    JobFailed,
    JobTimeout,
    NotFound,
    RateLimited,
    SlimyqError,
    Unreachable,
    UsageError,
    ValidationError,
)

__version__ = "0.1.0"

QUEUE_NAMES: tuple[str, ...] = ("chat", "database", "audit")

if TYPE_CHECKING:
    from slimyq._clientcore import JobSpec
    from slimyq.aclient import AsyncClient
    from slimyq.client import Client
    from slimyq.inspect.jobs import JobDetail
    from slimyq.jobs.base import JobContext, PermanentError
    from slimyq.jobs.registry import job_type
    from slimyq.payloads.common import Payload
    from slimyq.producer import Enqueued

_LAZY: dict[str, str] = {
    "Client": "slimyq.client",
    "AsyncClient": "slimyq.aclient",
    "JobSpec": "slimyq._clientcore",
    "Enqueued": "slimyq.producer",
    "JobDetail": "slimyq.inspect.jobs",
    "job_type": "slimyq.jobs.registry",
    "JobContext": "slimyq.jobs.base",
    "PermanentError": "slimyq.jobs.base",
    "Payload": "slimyq.payloads.common",
}

__all__ = [
    "QUEUE_NAMES",
    "AsyncClient",
    "Client",
    "ConfigError",
    "Enqueued",
    "JobContext",
    "JobDetail",
    "JobFailed",
    "JobSpec",
    "JobTimeout",
    "NotFound",
    "Payload",
    "PermanentError",
    "RateLimited",
    "SlimyqError",
    "Unreachable",
    "UsageError",
    "ValidationError",
    "job_type",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'slimyq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: the next access is a plain attribute
    return value
