"""The one check every way of running a job goes through (``slimyq worker`` and a plain
``rq worker`` alike): the allowlist, the queue, the call's shape and the payload's validation."""

from __future__ import annotations

from typing import Any

from slimyq.errors import ValidationFailed
from slimyq.jobs import registry
from slimyq.jobs.base import InvalidPayload, Refused
from slimyq.payloads.common import Payload, validate_payload


def check_call(func_name: str, instance: Any, args: list[Any], kwargs: dict[str, Any],
               queue: str) -> tuple[registry.JobType, Payload]:
    """The job type and validated payload of ``func_name(*args, **kwargs)`` on ``queue``; raises a
    :class:`~slimyq.jobs.base.PermanentError` for anything that must not run."""
    job_type = registry.by_func(func_name)
    if job_type is None:
        raise Refused(f"refused: {func_name!r} is not a registered slimyq job type")
    if instance is not None:
        raise Refused(f"refused: {func_name!r} called on an instance")
    if job_type.queue not in (registry.ANY_QUEUE, queue):
        raise Refused(f"refused: {job_type.name} jobs belong on the {job_type.queue!r} queue, not {queue!r}")
    if args:
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            kwargs = args[0]
        else:
            raise InvalidPayload("payload: pass the payload as keyword arguments (a JSON object)")
    try:
        return job_type, validate_payload(job_type.payload, kwargs)
    except ValidationFailed as exc:
        raise InvalidPayload("; ".join(exc.problems)) from None
