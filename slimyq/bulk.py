"""Bulk enqueue from a JSONL file: validate every line, then enqueue in chunks, streaming both times.

One job a line: ``{"type": "create_conversation", "payload": {...}, "jobId": "...", "queue": "..."}``
(``jobId`` and ``queue`` optional; the dashed type name is accepted; a missing payload is ``{}``;
blank lines are ignored). Problems are ``line N: field: problem`` with fields in camelCase, as in
the file. Nothing parsed is kept between the two passes: the file is read again for the second,
so memory stays flat for any number of lines (standard input is spooled to a temporary file first).

Resumable: each run has a run id, and a line without ``jobId`` is enqueued as
``bulk-<run>-<line number>``. A run stopped by a signal finishes the chunk in flight and reports
the next line; a run stopped by an error reports the chunk it could not confirm. Resuming with the
same run id from that line writes nothing twice: ids already in Redis are skipped.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import tempfile
import threading
from collections import Counter
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
from slimyq.producer import Enqueued, EnqueueRequest, encode_chunk, send_chunk
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
    rate_kinds: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)  # user -> (queue, type) -> jobs

    @property
    def unreported(self) -> int:
        return max(self.invalid - len(self.problems), 0) if self.problems else 0


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

    def parse(self, raw: bytes, default_id: str | None = None) -> EnqueueRequest:
        """``default_id``: the job id of a line without ``jobId``."""
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
        return EnqueueRequest(jt, payload, queue, job_id or default_id)

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


def line_count(path: Path) -> int:
    """Lines in ``path``, blank ones and a last one without a newline included (as numbered)."""
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` for every non-blank line, read in binary and streamed."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            stripped = raw.strip()
            if stripped:
                yield number, stripped


def scan(path: Path, parser: LineParser, start_line: int = 1) -> Scan:
    """First pass: validate every line (from ``start_line`` on); keep counts and the first problems only."""
    result = Scan()
    for number, raw in read_lines(path):
        if number < start_line:
            continue
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
                result.rate_kinds.setdefault(str(user), Counter())[(req.queue, req.job_type.name)] += 1
    return result


def new_run() -> str:
    """A bulk run's id: lines without a ``jobId`` get ``bulk-<run>-<line>`` ids (see :func:`line_job_id`)."""
    return secrets.token_hex(4)


def line_job_id(run: str, number: int) -> str:
    """The job id of line ``number`` of run ``run``: the same on a resumed run, so it enqueues nothing twice."""
    return f"bulk-{run}-{number}"


@dataclass
class BulkResult:
    """What the enqueue pass did so far; ``next_line`` is the first line not known to be enqueued."""

    run: str
    next_line: int
    enqueued: int = 0
    existed: int = 0
    invalid: int = 0  # lines skipped as invalid in the second pass

    @property
    def done(self) -> int:
        return self.enqueued + self.existed


class BulkStopped(Exception):
    """The enqueue pass stopped early (a signal, or an error while sending a chunk).

    ``result`` counts the chunks whose reply was read; ``uncertain`` is the range of lines whose
    chunk was being sent when it stopped (None when the stop fell between chunks). Resuming at
    ``result.next_line`` with the same run id is safe either way: a job already written is skipped.
    """

    def __init__(self, result: BulkResult, uncertain: tuple[int, int] | None, cause: BaseException | None) -> None:
        self.result = result
        self.uncertain = uncertain
        self.cause = cause
        super().__init__(f"bulk enqueue stopped at line {result.next_line}")


class StopFlag:
    """SIGINT/SIGTERM during the enqueue pass: finish the chunk in flight, then stop (a second signal
    stops at once). Only installs handlers in the main thread; elsewhere it is never set."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def is_set(self) -> bool:
        return self.signal is not None


def enqueue_file(
    conn: redis.Redis,
    settings: Settings,
    path: Path,
    parser: LineParser,
    *,
    run: str,
    start_line: int = 1,
    advance: Callable[[int], None] = lambda n: None,
    chunk: int = CHUNK,
    stop: StopFlag | None = None,
) -> BulkResult:
    """Enqueue every valid line of ``path`` from ``start_line`` on, in chunks (one round trip each).

    Lines without a ``jobId`` get :func:`line_job_id` ids. Chunks are sent by :class:`_Sender`
    while the next one is read. Raises :class:`BulkStopped` when ``stop`` is set (checked each time
    a chunk has been answered, acted on before the next is sent: a file that ends with that chunk
    is done, not stopped) or sending a chunk fails.
    """
    result = BulkResult(run=run, next_line=start_line)
    batch: list[tuple[int, EnqueueRequest]] = []
    last = start_line - 1
    sender = _Sender(conn, settings, result, advance)
    try:
        for number, raw in read_lines(path):
            if number < start_line:
                continue
            last = number
            try:
                req = parser.parse(raw, line_job_id(run, number))
            except ValidationFailed:
                result.invalid += 1
                continue
            batch.append((number, req))
            if len(batch) >= chunk:
                sender.send(batch, stop)
                batch = []
        if batch:
            sender.send(batch, stop)
        sender.settle()
    except KeyboardInterrupt as exc:  # a second signal while reading: stop now, say what is in flight
        raise BulkStopped(result, sender.in_flight(), exc) from exc
    result.next_line = last + 1
    return result


class _Sender:
    """Sends chunks on a thread of their own, one at a time, while the caller reads, validates and
    encodes the next one: the file's CPU work and Redis's script time overlap instead of taking
    turns. At most one chunk is in flight; each is accounted for (``result``, ``advance``) only
    once Redis has answered it, so a stop or a failure reports exactly what is known to be
    enqueued and the lines that were in flight. The threads are daemons: a second signal stops
    the command at once, without waiting for the chunk in flight (it lands or not; resuming
    re-sends its lines harmlessly, their ids being derived from the file)."""

    def __init__(self, conn: redis.Redis, settings: Settings, result: BulkResult, advance: Callable[[int], None]
                 ) -> None:
        from slimyq.runtime.scripts import Scripts

        self.conn, self.settings, self.result, self.advance = conn, settings, result, advance
        self.scripts = Scripts(conn)
        self.flight: tuple[list[tuple[int, EnqueueRequest]], _Flight] | None = None

    def send(self, batch: list[tuple[int, EnqueueRequest]], stop: StopFlag | None) -> None:
        """Encode ``batch``, wait for the chunk before it, then send it (or stop: a stop asked for
        while that chunk was in flight sends nothing more)."""
        chunk = encode_chunk(self.settings, [req for _, req in batch])
        before = self.flight is not None
        self.settle()
        if before and stop is not None and stop.is_set:
            raise BulkStopped(self.result, None, None)
        self.flight = (batch, _Flight(lambda: send_chunk(self.conn, self.scripts, self.settings, chunk)))

    def in_flight(self) -> tuple[int, int] | None:
        """The first and last line of the chunk sent and not answered yet."""
        return (self.flight[0][0][0], self.flight[0][-1][0]) if self.flight is not None else None

    def settle(self) -> None:
        """Wait for the chunk in flight and account for it."""
        if self.flight is None:
            return
        batch, flight = self.flight
        try:
            done = flight.result()
        except (Exception, KeyboardInterrupt) as exc:
            raise BulkStopped(self.result, (batch[0][0], batch[-1][0]), exc) from exc
        self.flight = None
        existed = sum(1 for d in done if d.status == "exists")
        self.result.existed += existed
        self.result.enqueued += len(done) - existed
        self.result.next_line = batch[-1][0] + 1
        self.advance(len(done))


class _Flight:
    """One chunk's round trip on a daemon thread; :meth:`result` waits for it (a signal
    interrupts the wait) and raises what it raised."""

    def __init__(self, call: Callable[[], list[Enqueued]]) -> None:
        self._call = call
        self._done = threading.Event()
        self._value: list[Enqueued] = []
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="slimyq-bulk", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to the waiting thread
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> list[Enqueued]:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


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
