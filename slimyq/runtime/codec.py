"""Job hashes in RQ's format: built at enqueue, decoded at claim.

A job is stored exactly as RQ 3 stores it (``rq:job:<id>`` with ``data`` = zlib of the JSON array
``[func_name, instance, args, kwargs]``, RQ's timestamp format, ``retries_left`` and
``retry_intervals``), so `rq info`, rq-dashboard and ``rq.job.Job.fetch`` read our jobs, and a
plain RQ client can enqueue one of our job types. slimyq adds ``meta`` (job type and user) and one
field of its own, ``slimyq_attempts``: a JSON list with each attempt's start, end and outcome.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

RQ_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

# Fields the claim script returns, in this order.
CLAIM_FIELDS = (
    "data",
    "meta",
    "timeout",
    "retries_left",
    "retry_intervals",
    "slimyq_attempts",
    "result_ttl",
    "failure_ttl",
    "enqueued_at",
    "created_at",
)

DEFAULT_RESULT_TTL = 86_400  # finished jobs beyond keep_finished are trimmed long before this
DEFAULT_FAILURE_TTL = 7 * 86_400


def rq_now() -> str:
    return dt.datetime.now(dt.UTC).strftime(RQ_TIME)


def parse_rq_time(value: str | bytes | None) -> dt.datetime | None:
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    for fmt in (RQ_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    return None


def new_job_id() -> str:
    return str(uuid.uuid4())


def encode_data(func_name: str, kwargs: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps([func_name, None, [], kwargs], separators=(",", ":")).encode())


def build_job_hash(
    *,
    func_name: str,
    payload: dict[str, Any],
    queue: str,
    job_type: str,
    user: str | None,
    timeout: int,
    retry_intervals: list[float],
    status: str = "queued",
    now: str | None = None,
) -> dict[str, Any]:
    """The hash RQ's ``Job.to_dict`` would write for ``func_name(**payload)``."""
    now = now or rq_now()
    meta: dict[str, Any] = {"type": job_type}
    if user is not None:
        meta["user"] = user
    return {
        "created_at": now,
        "enqueued_at": now if status == "queued" else "",
        "data": encode_data(func_name, payload),
        "success_callback_name": "",
        "failure_callback_name": "",
        "stopped_callback_name": "",
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
        "group_id": "",
        "status": status,
        "origin": queue,
        "description": f"{job_type}",
        "timeout": int(timeout),
        "result_ttl": DEFAULT_RESULT_TTL,
        "failure_ttl": DEFAULT_FAILURE_TTL,
        "meta": json.dumps(meta, separators=(",", ":")),
        "retries_left": len(retry_intervals),
        "retry_intervals": json.dumps([int(i) if float(i).is_integer() else i for i in retry_intervals]),
    }


class UndecodableJob(Exception):
    """The job's data is not zlib-compressed JSON (e.g. a pickled job): refused."""


@dataclass
class ClaimedJob:
    """A job as the claim script hands it to the worker."""

    id: str
    execution_id: str
    raw: dict[str, bytes | None]
    claimed_at: float = field(default_factory=time.time)

    def _text(self, name: str) -> str | None:
        value = self.raw.get(name)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    def _int(self, name: str, default: int | None) -> int | None:
        text = self._text(name)
        try:
            return int(float(text)) if text not in (None, "") else default
        except ValueError:
            return default

    def call(self) -> tuple[str, Any, list[Any], dict[str, Any]]:
        """``(func_name, instance, args, kwargs)`` without importing anything."""
        data = self.raw.get("data")
        if not data:
            raise UndecodableJob("the job has no data")
        try:
            text = zlib.decompress(data)
        except zlib.error:
            text = data
        try:
            decoded = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            raise UndecodableJob("job data is not JSON (pickled jobs are refused)") from None
        if not (isinstance(decoded, list) and len(decoded) == 4 and isinstance(decoded[0], str)):
            raise UndecodableJob("job data is not an RQ call [func, instance, args, kwargs]")
        func, instance, args, kwargs = decoded
        return func, instance, list(args or []), dict(kwargs or {})

    @property
    def meta(self) -> dict[str, Any]:
        text = self._text("meta")
        if not text:
            return {}
        try:
            meta = json.loads(text)
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    @property
    def attempts(self) -> list[dict[str, Any]]:
        text = self._text("slimyq_attempts")
        if not text:
            return []
        try:
            value = json.loads(text)
        except ValueError:
            return []
        return value if isinstance(value, list) else []

    def timeout(self, default: int) -> int:
        value = self._int("timeout", default)
        return default if value is None or value <= 0 else value

    def retries_left(self, default: int) -> int:
        value = self._int("retries_left", default)
        return default if value is None else max(value, 0)

    def retry_intervals(self, default: list[float]) -> list[float]:
        text = self._text("retry_intervals")
        if not text:
            return default
        try:
            value = json.loads(text)
        except ValueError:
            return default
        return [float(v) for v in value] if isinstance(value, list) and value else default

    def result_ttl(self) -> int:
        value = self._int("result_ttl", DEFAULT_RESULT_TTL)
        return DEFAULT_RESULT_TTL if value is None or value <= 0 else value

    def failure_ttl(self) -> int:
        value = self._int("failure_ttl", DEFAULT_FAILURE_TTL)
        return DEFAULT_FAILURE_TTL if value is None or value <= 0 else value


def retry_delay(intervals: list[float], retries_left: int) -> float:
    """RQ's rule: ``intervals[max(len - retries_left, 0)]``, taken before the decrement."""
    if not intervals:
        return 0.0
    index = max(len(intervals) - retries_left, 0)
    return float(intervals[min(index, len(intervals) - 1)])


def encode_return_value(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":"), default=str).encode()).decode()


def encode_exc_string(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode())).decode()


def decode_return_value(b64: bytes | str | None) -> Any:
    if not b64:
        return None
    return json.loads(base64.b64decode(b64))


def decode_exc_string(b64: bytes | str | None) -> str | None:
    if not b64:
        return None
    return zlib.decompress(base64.b64decode(b64)).decode("utf-8", "replace")


_EXC_PATH = re.compile(r"(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)(?=: |$)")


def failure_text(exc_string: str | None) -> str | None:
    """What a user is shown of a failure: the traceback's last line without the exception's
    module path (``slimyq.jobs.base.AccessDenied: Conversation not found or access denied`` reads
    ``Conversation not found or access denied``; the type has its own field where it is shown)."""
    lines = [line.strip() for line in (exc_string or "").splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    path = _EXC_PATH.match(last)
    if path is None:
        return last
    return last[path.end():].removeprefix(": ").strip() or path.group(1)
