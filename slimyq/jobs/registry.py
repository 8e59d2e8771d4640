"""The job registry: every job type's name, queue, handler and payload model.

It is the worker's allowlist (a job hash naming any other function is refused without import)
and the source of the ``slimyq enqueue`` commands. Handlers are named by dotted path and imported
only by the worker, so enqueueing never imports peewee or openai.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slimyq.errors import UsageError
from slimyq.payloads.canary import Canary
from slimyq.payloads.common import Payload
from slimyq.payloads.database import (
    CreateConversation,
    DeleteConversation,
    GetConversations,
    GetMessages,
    SaveMessage,
    UpdateConversation,
)

ANY_QUEUE = "*"


@dataclass(frozen=True)
class JobType:
    name: str  # underscore form, as in JSON and bulk files
    queue: str  # ANY_QUEUE: accepted on every queue (the canary)
    func_name: str  # dotted path of the handler: what the RQ job hash names
    payload: type[Payload]
    positional: str | None = None  # a field given as the command's argument (chat prompt)
    help: str = ""
    rate_limited: bool = False  # counted against the per-user limit at enqueue (slimyq.ratelimit)

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    def handler(self) -> Callable[[Any, Any], Any]:
        return _resolve(self.func_name)


_DB = "slimyq.jobs.database"

JOBS: dict[str, JobType] = {
    jt.name: jt
    for jt in (
        JobType("create_conversation", "database", f"{_DB}.create_conversation", CreateConversation,
                help="Create a conversation for a user."),
        JobType("save_message", "database", f"{_DB}.save_message", SaveMessage,
                help="Save a message in a conversation (bumps its updated_at)."),
        JobType("update_conversation", "database", f"{_DB}.update_conversation", UpdateConversation,
                help="Rename a conversation."),
        JobType("delete_conversation", "database", f"{_DB}.delete_conversation", DeleteConversation,
                help="Delete a conversation and its messages."),
        JobType("get_conversations", "database", f"{_DB}.get_conversations", GetConversations,
                help="List a user's conversations, newest first, with message counts."),
        JobType("get_messages", "database", f"{_DB}.get_messages", GetMessages,
                help="List a conversation's messages, oldest first."),
        JobType("canary", ANY_QUEUE, "slimyq.jobs.canary.canary", Canary,
                help="Sleep, fail the first N attempts, then succeed: proves a queue works."),
    )
}


def register(job_type: JobType) -> None:
    """Add a job type (the chat and audit modules call this at import)."""
    JOBS[job_type.name] = job_type
    _BY_FUNC[job_type.func_name] = job_type


_BY_FUNC: dict[str, JobType] = {jt.func_name: jt for jt in JOBS.values()}


@functools.cache
def _resolve(func_name: str) -> Callable[[Any, Any], Any]:
    """Import a registered handler once (the worker asks for it on every job)."""
    module, _, attr = func_name.rpartition(".")
    fn: Callable[[Any, Any], Any] = getattr(importlib.import_module(module), attr)
    return fn


@functools.cache
def _load_extensions() -> None:
    """Register the chat and audit job types (once: the worker looks types up on every job)."""
    for module in ("slimyq.jobs.chat_types", "slimyq.jobs.audit_types"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def get(name: str) -> JobType:
    """Look a job type up by name; the dashed form is accepted too."""
    _load_extensions()
    key = name.strip().replace("-", "_")
    try:
        return JOBS[key]
    except KeyError:
        known = ", ".join(sorted(jt.cli_name for jt in JOBS.values()))
        raise UsageError(f"unknown job type {name!r}; known types: {known}") from None


def by_func(func_name: str) -> JobType | None:
    """The allowlist check: the job type a job hash's function name belongs to, or None."""
    _load_extensions()
    return _BY_FUNC.get(func_name)


def all_types() -> list[JobType]:
    _load_extensions()
    return list(JOBS.values())


def queue_for(job_type: JobType, queue: str | None, known_queues: list[str]) -> str:
    """The queue a job goes to: its own, or (for the canary) the one asked for."""
    if job_type.queue != ANY_QUEUE:
        if queue and queue != job_type.queue:
            raise UsageError(f"{job_type.cli_name} jobs run on the {job_type.queue!r} queue, not {queue!r}")
        return job_type.queue
    if not queue:
        raise UsageError(f"--queue: required for {job_type.cli_name} (one of {', '.join(known_queues)})")
    if queue not in known_queues:
        raise UsageError(f"--queue: unknown queue {queue!r} (one of {', '.join(known_queues)})")
    return queue
