"""What :class:`slimyq.Client` and :class:`slimyq.AsyncClient` share: settings, and turning a
call's arguments into validated :class:`~slimyq.producer.EnqueueRequest` objects.

Pure: no I/O. The Redis side (the ENQUEUE script's arguments and replies, the result stream, the
job hash) is shared through :mod:`slimyq.producer` and :mod:`slimyq.inspect.jobs`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from slimyq.config import Settings, load_settings
from slimyq.errors import JobFailed, JobTimeout, SlimyqError, ValidationFailed, translate
from slimyq.inspect._common import attempts as parse_attempts
from slimyq.jobs import registry
from slimyq.jobs.registry import JobType
from slimyq.payloads.common import Payload
from slimyq.producer import EnqueueRequest, Outcome, build_request

PayloadLike = Mapping[str, Any] | Payload
P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def _translating() -> Iterator[None]:
    """Turn a lost Redis (or database) connection into the slimyq error saying what to fix
    (:func:`slimyq.errors.translate`, as the CLI does), not redis-py's own."""
    try:
        yield
    except SlimyqError:
        raise
    except Exception as exc:
        known = translate(exc)
        if known is None:
            raise
        raise known from exc


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """A client method that raises slimyq's errors only (see :func:`_translating`)."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with _translating():
            return method(*args, **kwargs)

    return call


def atranslated(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """:func:`translated` for the asyncio client's coroutines."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with _translating():
            return await method(*args, **kwargs)

    return call


@dataclass(frozen=True)
class JobSpec:
    """One job of :meth:`slimyq.Client.enqueue_many` with options (a ``(type, payload)`` pair is
    the short form)."""

    type: str
    payload: PayloadLike
    job_id: str | None = None
    queue: str | None = None
    delay: float | dt.timedelta | None = None
    at: dt.datetime | None = None


def settings_for(redis_url: str | None, database_url: str | None, config_file: str | Path | None,
                 settings: Settings | None) -> Settings:
    """The CLI's settings (env, ``.env``, TOML, defaults), the URLs given here winning; the ``jobs``
    setting's modules are imported."""
    if settings is None:
        overrides = {"redis_url": redis_url, "database_url": database_url}
        settings = load_settings(config_file=config_file, overrides=overrides).settings
    registry.configure(settings.jobs, now=True)  # a module that does not import fails the constructor
    return settings


def run_at(delay: float | dt.timedelta | None, at: dt.datetime | None, problems: list[str]) -> dt.datetime | None:
    """When to run: ``delay`` seconds from now or at ``at`` (naive = UTC); None = now. A time
    already past runs now."""
    if delay is not None and at is not None:
        problems.append("delay: give delay or at, not both")
        return None
    now = dt.datetime.now(dt.UTC)
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else float(delay)
        if seconds < 0:
            problems.append(f"delay: must be 0 or more seconds, got {seconds:g}")
            return None
        return now + dt.timedelta(seconds=seconds) if seconds > 0 else None
    if at is not None:
        aware = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC) if aware > now else None
    return None


def request(settings: Settings, job_type: str | JobType, payload: PayloadLike, *, job_id: str | None = None,
            queue: str | None = None, delay: float | dt.timedelta | None = None, at: dt.datetime | None = None,
            prefix: str = "") -> EnqueueRequest:
    """One validated request; :class:`ValidationFailed` names every bad field and option."""
    problems: list[str] = []
    when = run_at(delay, at, problems)
    try:
        req = build_request(settings, job_type, payload, job_id=job_id, queue=queue, run_at=when)
    except ValidationFailed as exc:
        problems = problems + exc.problems
        raise ValidationFailed(problems, prefix=prefix) from None
    if problems:
        raise ValidationFailed(problems, prefix=prefix)
    return req


def requests(settings: Settings, items: Iterable[tuple[str, PayloadLike] | JobSpec]) -> list[EnqueueRequest]:
    """Every item validated before anything is sent: one :class:`ValidationFailed` lists the
    problems of all of them (``item N: field: problem``, N from 0)."""
    out: list[EnqueueRequest] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        spec = item if isinstance(item, JobSpec) else _spec(item, index, problems)
        if spec is None:
            continue
        try:
            out.append(request(settings, spec.type, spec.payload, job_id=spec.job_id, queue=spec.queue,
                               delay=spec.delay, at=spec.at))
        except ValidationFailed as exc:
            problems += [f"item {index}: {p}" for p in exc.problems]
    if problems:
        raise ValidationFailed(problems)
    return out


def _spec(item: Any, index: int, problems: list[str]) -> JobSpec | None:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return JobSpec(item[0], item[1])
    problems.append(f"item {index}: must be a (type, payload) pair or a slimyq.JobSpec, got {type(item).__name__}")
    return None


WAIT_FIELDS = ("slimyq_attempts", "origin")  # what a failed or timed-out wait reads of the job hash


def end_error(job_id: str, timeout: float, outcome: Outcome, fields: list[Any]) -> SlimyqError:
    """The error of a wait that did not finish: :class:`JobFailed` with the attempts and error type,
    or :class:`JobTimeout` naming the queue (``fields``: the job's :data:`WAIT_FIELDS`)."""
    if outcome.status == "failed":
        tries = parse_attempts(fields[0])
        found = next((a.get("errorType") for a in reversed(tries) if a.get("errorType")), None)
        return JobFailed(job_id, outcome.error or "failed", len(tries), str(found) if found is not None else None)
    origin = fields[1].decode() if isinstance(fields[1], bytes) else str(fields[1] or "")
    return JobTimeout(job_id, timeout, (outcome.error or "").removeprefix("still "), origin)

