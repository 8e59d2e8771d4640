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
import functools
import json
import math
import re
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slimyq.runtime import hashfields
from slimyq.stamps import RQ_TIME as RQ_TIME
from slimyq.stamps import rq_time

JOB_ID = re.compile(r"\A[A-Za-z0-9_-]{1,128}\Z")  # (not ^...$: "$" matches before a trailing newline)

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

INFRA_ERROR = "database_unavailable"  # the error type of an attempt that met an unreachable database
BATCH_ROLLED_BACK = "batch_rolled_back"  # succeeded in a batch whose transaction was rolled back (a batch-mate)
CONFLICT_ERROR = "database_conflict"  # rolled back by the database: a deadlock's victim, a serialization failure
RERUN_ERRORS = frozenset({INFRA_ERROR, BATCH_ROLLED_BACK, CONFLICT_ERROR})  # rerun, no attempt used up, capped
DEFAULT_RESULT_TTL = 86_400  # finished jobs beyond keep_finished are trimmed long before this
DEFAULT_FAILURE_TTL = 7 * 86_400


def rq_now() -> str:
    return rq_time(time.time())


_RQ_TIME_SHAPE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)


def parse_rq_time(value: str | bytes | None, *, aware: bool = True) -> dt.datetime | None:
    """RQ's timestamp as a UTC datetime (``aware=False``: without the time zone, as the database
    columns hold it; a ``replace(tzinfo=...)`` less, which is most of the cost)."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    if _RQ_TIME_SHAPE.fullmatch(text):
        # RQ's own shape (``2026-11-23T14:21:30.123456Z``), what every job has: several times
        # cheaper than strptime; anything else takes the strict path below.
        try:
            naive = dt.datetime.fromisoformat(text[:26])
        except ValueError:  # digits out of range (month 13)
            return None
        return naive.replace(tzinfo=dt.UTC) if aware else naive
    for fmt in (RQ_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            naive = dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=dt.UTC) if aware else naive
    return None


def new_job_id() -> str:
    return str(uuid.uuid4())


# json.dumps(value, separators=(",", ":")) without building a JSONEncoder per call
compact = json.JSONEncoder(separators=(",", ":")).encode


def encode_data(func_name: str, kwargs: dict[str, Any]) -> bytes:
    """The job's ``data``: zlib, as RQ writes it, with a 4 KiB window and a small hash table. A
    job's JSON is short, and setting up zlib's default state (32 KiB window, level-8 memory) costs
    more than compressing it: 3.9 against 23 us for a conversation's 127 bytes, the same 118 bytes
    out, and a 23 KB chat message comes out smaller (821 bytes against 894). Any zlib reader
    (RQ's ``zlib.decompress``) reads it."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, 12, 2)
    return deflate.compress(compact([func_name, None, [], kwargs]).encode()) + deflate.flush()


@functools.lru_cache(maxsize=4096)
def _meta_json(job_type: str, user: str | None) -> str:
    """A new job's ``meta``: its type and user (a bulk file has many jobs of each user)."""
    meta: dict[str, Any] = {"type": job_type}
    if user is not None:
        meta["user"] = user
    return compact(meta)


@functools.lru_cache(maxsize=64)
def _intervals_json(intervals: tuple[float, ...]) -> str:
    return json.dumps([int(i) if float(i).is_integer() else i for i in intervals])  # RQ's spacing


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
        "meta": _meta_json(job_type, user),
        "retries_left": len(retry_intervals),
        "retry_intervals": _intervals_json(tuple(retry_intervals)),
    }


class UndecodableJob(Exception):
    """The job's data is not zlib-compressed JSON (e.g. a pickled job), or is too large: refused."""


MAX_JOB_SIZE = 16 * 1024 * 1024  # bytes of decompressed job data, unless configured otherwise
_ZLIB_MAX_RATIO = 1032  # deflate's largest expansion: 1032 output bytes per input byte


def text_id(raw: bytes) -> str:
    """A job id or member from Redis as text; bytes that are not UTF-8 survive as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def wire(text: str) -> bytes:
    """The exact bytes of an id or member made by :func:`text_id`, for sending back to Redis."""
    return text.encode("utf-8", "surrogateescape")


def printable(text: str) -> str:
    """An id safe to print or store in the database (undecodable bytes shown as U+FFFD)."""
    return wire(text).decode("utf-8", "replace")


class BadField(Exception):
    """A field of a job hash that cannot be read: the job is refused with this reason."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"refused: job field {name!r} {problem}; fix or delete the job")


@dataclass
class ClaimedJob:
    """A job as the claim script hands it to the worker.

    Every field the worker needs is read once, here, and defensively: a field that cannot be read
    (not UTF-8, not a number, not the JSON shape RQ writes) does not raise; it sets ``problem``,
    the reason the job is refused, and the field takes its default. ``data`` is decoded later, by
    :meth:`call`, in the executor thread.
    """

    id: str
    execution_id: str
    raw: dict[str, bytes | None]
    claimed_at: float = field(default_factory=time.time)
    problem: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # The execution's member in the started registry and the worker's executions set (read
        # about ten times per job: made once).
        self.member = f"{self.id}:{self.execution_id}"
        if max(self.id, default="") >= "\udc80" and _undecodable(self.id):
            self.problem = "refused: the job id is not valid UTF-8; delete the job"
        self.meta: Mapping[str, Any] = self._parse("meta", hashfields.meta, hashfields.NO_META)
        self.attempts: list[dict[str, Any]] = self._parse("slimyq_attempts", hashfields.json_objects, [])
        self._timeout: int | None = self._parse("timeout", hashfields.integer, None)
        self._retries_left: int | None = self._parse("retries_left", hashfields.integer, None)
        self._retry_intervals: tuple[float, ...] | None = self._parse("retry_intervals", hashfields.intervals, None)
        self._result_ttl: int | None = self._parse("result_ttl", hashfields.integer, None)
        self._failure_ttl: int | None = self._parse("failure_ttl", hashfields.integer, None)
        self._parse("enqueued_at", str, None)  # text: parsed only when asked for (history)
        self._parse("created_at", str, None)

    @property
    def enqueued_at(self) -> dt.datetime | None:
        """When the job was enqueued, naive UTC (for its history row)."""
        value = self.raw.get("enqueued_at")
        return parse_rq_time(value, aware=False) if self.problem is None else None

    @property
    def attempt(self) -> int:
        """This attempt's number: 1 + the attempts recorded, not counting retries for an unreachable
        database (they use up no attempt and share one record, the one with ``tries``)."""
        return 1 + sum(1 for a in self.attempts if "tries" not in a)

    @property
    def key_id(self) -> bytes:
        return wire(self.id)

    def _parse(self, name: str, parse: Any, default: Any) -> Any:
        value = self.raw.get(name)
        if value is None or value == b"":
            return default
        try:
            parsed = hashfields.read(value, parse)
        except hashfields.Unreadable as exc:
            if self.problem is None:
                self.problem = str(BadField(name, str(exc)))
            return default
        return default if parsed is None else parsed

    def call(self, max_size: int = MAX_JOB_SIZE) -> tuple[str, Any, list[Any], dict[str, Any]]:
        """``(func_name, instance, args, kwargs)`` without importing anything.

        Decompression stops at ``max_size`` bytes: a zlib bomb is refused, not expanded."""
        data = self.raw.get("data")
        if not data:
            raise UndecodableJob("the job has no data")
        if len(data) > max_size:
            raise UndecodableJob(f"job data is larger than max_job_size ({max_size} bytes)")
        try:
            if len(data) * _ZLIB_MAX_RATIO <= max_size:  # can't inflate past the limit: the fast call
                text = zlib.decompress(data)
            else:
                inflater = zlib.decompressobj()
                text = inflater.decompress(data, max_size + 1)
                if len(text) > max_size or inflater.unconsumed_tail:
                    raise UndecodableJob(f"job data decompresses to more than max_job_size ({max_size} bytes)")
        except zlib.error:
            text = data
        try:
            decoded = json.loads(hashfields.json_text(text))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise UndecodableJob("job data is not JSON (pickled jobs are refused)") from None
        if not (isinstance(decoded, list) and len(decoded) == 4 and isinstance(decoded[0], str)):
            raise UndecodableJob("job data is not an RQ call [func, instance, args, kwargs]")
        func, instance, args, kwargs = decoded
        if not isinstance(args, list | type(None)) or not isinstance(kwargs, dict | type(None)):
            raise UndecodableJob("job data: args must be a JSON array and kwargs a JSON object")
        return func, instance, list(args or []), dict(kwargs or {})

    def timeout(self, default: int) -> float:
        """Seconds the job may run: RQ's meaning, ``-1`` (any negative) is no timeout (``inf``);
        unset or 0 is the queue's default."""
        value = self._timeout
        if value is None or value == 0:
            return float(default)
        return math.inf if value < 0 else float(value)

    def retries_left(self, default: int) -> int:
        value = self._retries_left
        return default if value is None else max(value, 0)

    def retry_intervals(self, default: list[float]) -> list[float]:
        return list(self._retry_intervals) if self._retry_intervals else default

    def result_ttl(self) -> int:
        """RQ's meaning: -1 keeps the finished job forever, 0 not at all, N for N seconds."""
        return _rq_ttl(self._result_ttl, DEFAULT_RESULT_TTL)

    def failure_ttl(self) -> int:
        """The same for a failed job (unset: a week)."""
        return _rq_ttl(self._failure_ttl, DEFAULT_FAILURE_TTL)


def _rq_ttl(value: int | None, default: int) -> int:
    if value is None:
        return default
    return -1 if value < 0 else value


def _undecodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def retry_delay(intervals: list[float], retries_left: int) -> float:
    """RQ's rule: ``intervals[max(len - retries_left, 0)]``, taken before the decrement."""
    if not intervals:
        return 0.0
    index = max(len(intervals) - retries_left, 0)
    return float(intervals[min(index, len(intervals) - 1)])


_result_json = json.JSONEncoder(separators=(",", ":"), default=str).encode  # built once, not per call


def encode_return_value(value: Any) -> str:
    return base64.b64encode(_result_json(value).encode()).decode()


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
