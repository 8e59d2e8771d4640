"""Every registered job type as an RQ-callable function, for a plain ``rq worker``.

A plain ``rq worker -S rq.serializers.JSONSerializer`` imports the function a job hash names
(``slimyq.jobs.database.create_conversation``) and calls it with the payload's fields as keyword
arguments. Handlers declared with :func:`slimyq.jobs.registry.job_type` are wrapped by
:func:`slimyq.jobs.base.rq_callable`, so that call lands here: the job goes through the same
allowlist and validation as under ``slimyq worker`` (:func:`slimyq.jobs.calls.check_call`),
gets the same context (the RQ job id, from which row ids derive: effect once), and returns the
same result shape, which RQ stores. Permanent failures (validation, ownership) set the job's
``retries_left`` to 0, so RQ does not retry them.

What a plain RQ worker does not give: the claim atomicity and speed of ``slimyq worker``, its
crash recovery (RQ fails an abandoned job after its own timeouts), the job history rows, the
queue metrics and the refusal of functions outside the registry (RQ imports whatever a job names).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from slimyq.config import Settings
from slimyq.jobs.base import JobContext, PermanentError
from slimyq.jobs.calls import check_call


@functools.cache
def _settings() -> Settings:
    from slimyq.config import load_settings
    from slimyq.jobs import registry

    settings = load_settings().settings
    registry.configure(settings.jobs)
    return settings


@functools.cache
def _database() -> Any:
    from slimyq.db import open_database

    return open_database(_settings())


def _attempt(job: Any) -> int:
    """The attempt's number: slimyq's recorded attempts plus RQ's retries plus this one."""
    recorded = job.connection.hget(job.key, "slimyq_attempts")
    try:
        import json

        earlier = len(json.loads(recorded)) if recorded else 0
    except ValueError:
        earlier = 0
    return earlier + (job.number_of_retries or 0) + 1


def run_from_rq(handler: Callable[[Any, JobContext], Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise TypeError(f"{handler.__name__}: call it as handler(payload, ctx), or run it as an RQ job")
    func_name = f"{handler.__module__}.{handler.__name__}"
    try:
        settings = _settings()  # first: it registers the `jobs` setting's modules
        job_type, payload = check_call(func_name, None, list(args), kwargs, job.origin)
        ctx = JobContext(job.id, job.origin, _attempt(job), settings, db_factory=_database,
                         rerunnable=job_type.batchable)
        return handler(payload, ctx)
    except PermanentError:
        job.retries_left = 0  # RQ retries only while retries_left > 0: a permanent error fails now
        raise
