"""Bulk enqueue from a JSONL file: validate every line, then enqueue in chunks, streaming both times.

One job a line: ``{"type": "create_conversation", "payload": {...}, "jobId": "...", "queue": "..."}``
(``jobId`` and ``queue`` optional; the dashed type name is accepted; a missing payload is ``{}``;
blank lines are ignored). Problems are ``line N: field: problem`` with fields in camelCase, as in
the file. Nothing parsed is kept between the two passes: the file is read again for the second,
so memory stays flat for any number of lines (standard input is spooled to a temporary file first).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
from pydantic import ValidationError

from slimyq.config import Settings
from slimyq.errors import UsageError, ValidationFailed
from slimyq.jobs import registry
from slimyq.jobs.registry import JobType
from slimyq.payloads.common import problems_of
from slimyq.producer import EnqueueRequest, enqueue_many
from slimyq.runtime import codec

LINE_KEYS = ("type", "payload", "jobId", "queue")
MAX_REPORTED = 100  # problems kept for the report; the rest are only counted
CHUNK = 500


@dataclass
class Scan:
    """What the validation pass found."""

    lines: int = 0  # non-blank lines
    valid: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # the first MAX_REPORTED, "line N: ..."
    rate_counts: dict[str, int] = field(default_factory=dict)  # user -> jobs of rate-limited types

    @property
    def unreported(self) -> int:
        return max(self.invalid - len(self.problems), 0) if self.problems else 0


@dataclass(frozen=True)
class BulkResult:
    enqueued: int
    existed: int
    invalid: int  # lines skipped as invalid in the second pass


class LineParser:
    """Turns one line into an :class:`EnqueueRequest`, or raises :class:`ValidationFailed`."""

    def __init__(self, known_queues: list[str], default_queue: str | None = None) -> None:
        self.known_queues = known_queues
        self.default_queue = default_queue
        self.types: dict[str, JobType] = {}
        for jt in registry.all_types():
            self.types[jt.name] = self.types[jt.cli_name] = jt
        self._queues: dict[tuple[str, str | None], str | Exception] = {}

    def _queue(self, jt: JobType, asked: str | None) -> str:
        key = (jt.name, asked)
        if key not in self._queues:
            try:
                self._queues[key] = registry.queue_for(jt, asked, self.known_queues)
            except UsageError as exc:
                self._queues[key] = exc
        found = self._queues[key]
        if isinstance(found, Exception):
            raise ValidationFailed([f"queue: {str(found).removeprefix('--queue: ')}"])
        return found

    def parse(self, raw: bytes) -> EnqueueRequest:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationFailed(
                [f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start + 1})"]
            ) from None
        try:
            line = json.loads(text)
        except ValueError as exc:
            reason = getattr(exc, "msg", str(exc))
            raise ValidationFailed([f"not valid JSON ({reason} at column {getattr(exc, 'colno', '?')})"]) from None
        if not isinstance(line, dict):
            raise ValidationFailed(
                [f'must be a JSON object like {{"type": ..., "payload": {{...}}}}, got {_kind(line)}']
            )
        problems = [f"{k}: is not a known field (known: {', '.join(LINE_KEYS)})" for k in line if k not in LINE_KEYS]
        jt = self._type(line.get("type"), problems)
        job_id = self._job_id(line.get("jobId"), problems)
        asked = line.get("queue", self.default_queue)
        if asked is not None and not isinstance(asked, str):
            problems.append(f"queue: must be a string, got {_kind(asked)}")
            asked = None
        payload_data = line.get("payload", {})
        if not isinstance(payload_data, dict):
            problems.append(f"payload: must be a JSON object, got {_kind(payload_data)}")
        if jt is None or problems:
            raise ValidationFailed(problems)
        queue = ""
        try:
            queue = self._queue(jt, asked)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
        try:
            payload = jt.payload.model_validate(payload_data)
        except ValidationError as exc:
            problems.extend(problems_of(exc, jt.payload))
        if problems:
            raise ValidationFailed(problems)
        return EnqueueRequest(jt, payload, queue, job_id)

    def _type(self, name: Any, problems: list[str]) -> JobType | None:
        if name is None:
            problems.append("type: is required")
            return None
        if not isinstance(name, str):
            problems.append(f"type: must be a string, got {_kind(name)}")
            return None
        jt = self.types.get(name.strip())
        if jt is None:
            known = ", ".join(sorted({t.name for t in self.types.values()}))
            problems.append(f"type: unknown job type {name!r} (known: {known})")
        return jt

    @staticmethod
    def _job_id(value: Any, problems: list[str]) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not codec.JOB_ID.match(value):
            problems.append(f"jobId: {value!r} is not a valid job id (use 1-128 of A-Z a-z 0-9 _ -)")
            return None
        return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` for every non-blank line, read in binary and streamed."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            stripped = raw.strip()
            if stripped:
                yield number, stripped


def scan(path: Path, parser: LineParser) -> Scan:
    """First pass: validate every line; keep counts and the first problems only."""
    result = Scan()
    for number, raw in read_lines(path):
        result.lines += 1
        try:
            req = parser.parse(raw)
        except ValidationFailed as exc:
            result.invalid += 1
            for problem in exc.problems:
                if len(result.problems) < MAX_REPORTED:
                    result.problems.append(f"line {number}: {problem}")
            continue
        result.valid += 1
        if req.job_type.rate_limited:
            user = getattr(req.payload, "user_id", None)
            if user is not None:
                result.rate_counts[str(user)] = result.rate_counts.get(str(user), 0) + 1
    return result


def valid_requests(path: Path, parser: LineParser, invalid: list[int]) -> Iterator[EnqueueRequest]:
    """Second pass: the valid lines' requests, in file order (counts skipped lines in ``invalid``)."""
    for _number, raw in read_lines(path):
        try:
            yield parser.parse(raw)
        except ValidationFailed:
            invalid[0] += 1


def enqueue_file(
    conn: redis.Redis,
    settings: Settings,
    path: Path,
    parser: LineParser,
    *,
    advance: Callable[[int], None] = lambda n: None,
    chunk: int = CHUNK,
) -> BulkResult:
    """Enqueue every valid line of ``path`` in chunks (one round trip each)."""
    enqueued = existed = pending = 0
    invalid = [0]
    for done in enqueue_many(conn, settings, valid_requests(path, parser, invalid), chunk=chunk):
        if done.status == "exists":
            existed += 1
        else:
            enqueued += 1
        pending += 1
        if pending >= chunk:
            advance(pending)
            pending = 0
    if pending:
        advance(pending)
    return BulkResult(enqueued, existed, invalid[0])


@contextmanager
def spooled(stream: IO[bytes]) -> Iterator[Path]:
    """Standard input copied to a temporary file, so it can be read twice; removed afterwards."""
    with tempfile.NamedTemporaryFile(prefix="slimyq-bulk-", suffix=".jsonl", delete=False) as tmp:
        shutil.copyfileobj(stream, tmp, 1 << 20)
        name = tmp.name
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
