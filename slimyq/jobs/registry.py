"""The job registry: every job type's name, queue, handler and payload model.

One declaration style for slimyq's own job types and a team's: the :func:`job_type` decorator on
the handler, in a module the registry is told about::

    @job_type("ingest_club_metrics", queue="database", payload=IngestClubMetrics)
    def ingest_club_metrics(p: IngestClubMetrics, ctx: JobContext) -> dict[str, Any]: ...

Modules are loaded by name, never found by scanning: slimyq's own (:data:`BUILTIN_MODULES`), the
ones named by the ``jobs`` setting (``jobs = ["myapp.jobs"]``) and those of the
``slimyq.job_types`` entry-point group. That is the worker's allowlist: a job hash naming any other
function is refused without importing anything.

Enqueueing imports these modules (it needs the payload models), so a declaring module keeps its
heavy imports (peewee, openai, ...) inside the handler bodies: enqueueing never imports them.
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from slimyq.errors import ConfigError, UsageError
from slimyq.payloads.common import Payload

ANY_QUEUE = "*"
ENTRY_POINT_GROUP = "slimyq.job_types"
BUILTIN_MODULES: tuple[str, ...] = (
    "slimyq.jobs.database",
    "slimyq.jobs.canary",
    "slimyq.jobs.chat",
    "slimyq.jobs.audit",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class JobType:
    name: str  # underscore form, as in JSON and bulk files
    queue: str  # ANY_QUEUE: accepted on every queue (the canary)
    func_name: str  # dotted path of the handler: what the RQ job hash names
    payload: type[Payload]
    positional: str | None = None  # a field given as the command's argument (chat prompt)
    help: str = ""
    rate_limited: bool = False  # counted against the per-user limit at enqueue (slimyq.ratelimit)
    batchable: bool = False  # short database work only: may share a batch transaction (slimyq.runtime.batch)

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    def handler(self) -> Callable[[Any, Any], Any]:
        return _resolve(self.func_name)


JOBS: dict[str, JobType] = {}
_BY_FUNC: dict[str, JobType] = {}
_LOADED: set[str] = set()
_LOCK = threading.RLock()


def job_type(
    name: str,
    *,
    queue: str,
    payload: type[Payload],
    help: str = "",
    positional: str | None = None,
    rate_limited: bool = False,
    batchable: bool = False,
) -> Callable[[F], F]:
    """Declare the decorated handler as job type ``name`` on ``queue`` (``"*"``: any queue).

    The handler is called ``handler(payload, ctx)`` with the validated ``payload`` model and a
    :class:`~slimyq.jobs.base.JobContext`, and returns the job's result (JSON-serialisable). It is
    also callable the way a plain RQ worker calls a job (``handler(**fields)``), through the same
    allowlist and validation. ``help`` is the ``slimyq enqueue <type> --help`` text; ``positional``
    names a field given as the command's argument; ``rate_limited`` counts the job against its
    user's rate limit (the payload's ``user_id``) at enqueue; ``batchable`` lets the job share its
    claim's database transaction on a queue with ``batch_transaction`` (only for short work whose
    every effect is database writes through ``ctx.db``: a rolled-back batch runs it again, and
    :func:`slimyq.jobs.effects.once` runs its ``apply`` before looking for the marker).
    """
    if not _NAME.match(name):
        raise ConfigError(f"job type {name!r}: use 1-64 of a-z 0-9 _, starting with a letter")
    if not (isinstance(payload, type) and issubclass(payload, Payload)):
        raise ConfigError(f"job type {name!r}: payload must be a slimyq.Payload subclass, got {payload!r}")
    if positional is not None and positional not in payload.model_fields:
        raise ConfigError(f"job type {name!r}: positional={positional!r} is not a field of {payload.__name__}")

    def decorate(handler: F) -> F:
        from slimyq.jobs.base import rq_callable

        entry = rq_callable(handler)
        func_name = f"{handler.__module__}.{handler.__qualname__}"
        if "<" in func_name:
            raise ConfigError(f"job type {name!r}: the handler must be a module-level function, not {func_name}")
        summary = help or " ".join((handler.__doc__ or "").strip().split("\n\n")[0].split())
        register(JobType(name, queue, func_name, payload, positional, summary, rate_limited, batchable))
        return entry  # type: ignore[return-value]

    return decorate


def register(jt: JobType) -> None:
    """Add a job type. Declaring the same name twice (from two modules) is a configuration error."""
    with _LOCK:
        old = JOBS.get(jt.name)
        if old is not None and old.func_name != jt.func_name:
            raise ConfigError(f"job type {jt.name!r} is declared twice: by {old.func_name} and by {jt.func_name}; "
                              "rename one")
        JOBS[jt.name] = jt
        _BY_FUNC[jt.func_name] = jt


@functools.cache
def _resolve(func_name: str) -> Callable[[Any, Any], Any]:
    """Import a registered handler once (the worker asks for it on every job)."""
    module, _, attr = func_name.rpartition(".")
    fn: Callable[[Any, Any], Any] = getattr(importlib.import_module(module), attr)
    return fn


def _import(module: str, source: str) -> None:
    if module in _LOADED:
        return
    if not _MODULE.match(module):
        raise ConfigError(f"{source}: {module!r} is not a module name (e.g. myapp.jobs)")
    try:
        importlib.import_module(module)
    except ConfigError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        _WANTED.pop(module, None)  # reported once, to whoever configured it; not every later lookup
        raise ConfigError(f"{source}: cannot import job module {module!r} ({reason}); install it, fix the name "
                          "or remove it") from None
    _LOADED.add(module)


@functools.cache
def _entry_point_modules() -> tuple[tuple[str, str], ...]:
    """The modules of the ``slimyq.job_types`` entry-point group, as (entry point, module)."""
    from importlib.metadata import entry_points

    found = {(ep.name, ep.value.partition(":")[0].strip()) for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return tuple(sorted(found))


_WANTED: dict[str, str] = {}  # the jobs setting's modules -> where they were named
_ready = threading.Event()


def _load() -> None:
    """Import slimyq's modules, the entry points' and the configured ones (each once; then every
    lookup is a dict read)."""
    if _ready.is_set():
        return
    with _LOCK:
        if _ready.is_set():
            return
        for module in BUILTIN_MODULES:
            _import(module, "slimyq")
        for ep_name, module in _entry_point_modules():
            _import(module, f"entry point {ep_name!r} of group {ENTRY_POINT_GROUP}")
        for module, source in list(_WANTED.items()):
            _import(module, source)
        _ready.set()


def configure(modules: Iterable[str], source: str = "jobs setting", *, now: bool = False) -> None:
    """Add the modules the ``jobs`` setting names; they are imported on the next lookup (each once,
    thread-safe), or at once with ``now`` (a :class:`ConfigError` names a module that does not
    import). Cheap otherwise: commands call it whenever they build their settings."""
    with _LOCK:
        for module in modules:
            if module not in _LOADED and module not in _WANTED:
                _WANTED[module] = source
                _ready.clear()
    if now:
        _load()


def get(name: str) -> JobType:
    """Look a job type up by name; the dashed form is accepted too."""
    _load()
    key = name.strip().replace("-", "_")
    try:
        return JOBS[key]
    except KeyError:
        known = ", ".join(sorted(jt.cli_name for jt in JOBS.values()))
        raise UsageError(f"unknown job type {name!r}; known types: {known}") from None


def by_func(func_name: str) -> JobType | None:
    """The allowlist check: the job type a job hash's function name belongs to, or None."""
    _load()
    return _BY_FUNC.get(func_name)


def all_types() -> list[JobType]:
    _load()
    return list(JOBS.values())


def queue_for(job_type: JobType, queue: str | None, known_queues: list[str]) -> str:
    """The queue a job goes to: its own, or (for the canary) the one asked for."""
    if job_type.queue != ANY_QUEUE:
        if queue and queue != job_type.queue:
            raise UsageError(f"{job_type.cli_name} jobs run on the {job_type.queue!r} queue, not {queue!r}")
        if job_type.queue not in known_queues:
            raise UsageError(f"{job_type.cli_name} jobs run on the {job_type.queue!r} queue, which is not "
                             f"configured (queues: {', '.join(known_queues)})")
        return job_type.queue
    if not queue:
        raise UsageError(f"--queue: required for {job_type.cli_name} (one of {', '.join(known_queues)})")
    if queue not in known_queues:
        raise UsageError(f"--queue: unknown queue {queue!r} (one of {', '.join(known_queues)})")
    return queue
