"""Job listings, newest first, with work bounded per page whatever the number of jobs.

Each (queue, state) pair is a *source* read newest first: the right end of ``rq:queue:<q>`` (jobs
are pushed on the right) with LRANGE, the registries with ZREVRANGE ... LIMIT. Sources are read
together, a page at a time (one pipelined round trip for the ids, one for their hashes), and a
source stops when it has produced ``limit`` matching rows, when a whole page is older than
``--since``, or when it has scanned its bound: ``min(10 x limit, 10,000)`` jobs. The bound is what
keeps ``--type``/``--user`` filters cheap on a million-job queue; when it cuts a listing short,
``JobPage.truncated`` says so. Rows from all sources are then merged by ``at``: when the job
entered its current state (ended, else started, else enqueued, else created).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import redis

from slimyq.inspect._common import STATES, attempts, job_id_of, meta, norm_type, text, type_of, when
from slimyq.runtime import keys

SCAN_FACTOR = 10
SCAN_MAX = 10_000
_FIELDS = ("status", "meta", "created_at", "enqueued_at", "started_at", "ended_at", "slimyq_attempts", "origin",
           "description")


@dataclass(frozen=True)
class JobRow:
    id: str
    queue: str
    state: str
    type: str | None
    user: str | None
    at: dt.datetime | None
    attempts: int
    error: str | None


@dataclass
class JobPage:
    rows: list[JobRow]
    scanned: int
    truncated: bool = False


@dataclass
class _Source:
    queue: str
    state: str
    offset: int = 0
    found: int = 0
    done: bool = False
    rows: list[JobRow] = field(default_factory=list)

    def read(self, pipe: Any, size: int) -> None:
        if self.state == "queued":
            pipe.lrange(keys.queue(self.queue), -(self.offset + size), -(self.offset + 1))
        else:
            key = {"started": keys.started, "scheduled": keys.scheduled, "deferred": keys.deferred,
                   "finished": keys.finished, "failed": keys.failed, "canceled": keys.canceled}[self.state]
            pipe.zrevrange(key(self.queue), self.offset, self.offset + size - 1)

    def ids(self, reply: list[Any]) -> list[str]:
        if self.state == "queued":
            return [text(i) or "" for i in reversed(reply)]
        return [job_id_of(m) for m in reply]


def _entered(state: str, f: dict[str, str | None]) -> dt.datetime | None:
    """When the job entered ``state``."""
    if state == "queued":
        return when(f["enqueued_at"]) or when(f["created_at"])
    if state in ("scheduled", "deferred"):
        return when(f["ended_at"]) or when(f["created_at"])  # a retry waits since its attempt ended
    if state == "started":
        return when(f["started_at"]) or when(f["enqueued_at"])
    return when(f["ended_at"]) or when(f["started_at"]) or when(f["enqueued_at"]) or when(f["created_at"])


def _row(queue: str, state: str, job_id: str, values: list[Any]) -> JobRow | None:
    f = dict(zip(_FIELDS, (text(v) for v in values), strict=True))
    if not f["status"] and not f["meta"] and not f["created_at"]:
        return None  # the hash expired or was deleted meanwhile
    info = meta(f["meta"])
    tries = attempts(f["slimyq_attempts"])
    last_error = next((a.get("error") for a in reversed(tries) if a.get("error")), None)
    at = _entered(state, f)
    error = str(last_error).strip().splitlines()[-1][:120] if last_error else None
    return JobRow(
        id=job_id,
        queue=queue,
        state=state,
        type=type_of(info, f["description"]),
        user=str(info["user"]) if info.get("user") is not None else None,
        at=at,
        attempts=len(tries),
        error=error if state in ("failed", "queued", "scheduled", "started") else None,
    )


def list_jobs(
    conn: redis.Redis,
    queues: list[str],
    *,
    states: list[str] | None = None,
    job_type: str | None = None,
    user: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
) -> JobPage:
    """The newest ``limit`` jobs of ``queues`` in ``states`` (all states by default)."""
    wanted = norm_type(job_type)
    sources = [_Source(q, s) for q in queues for s in (states or list(STATES))]
    bound = min(SCAN_FACTOR * limit, SCAN_MAX)
    filtered = bool(wanted or user or since)
    page = limit if not filtered else max(limit, 100)
    scanned, truncated = 0, False
    while True:
        active = [s for s in sources if not s.done]
        if not active:
            break
        sizes = [min(page, bound - src.offset) for src in active]
        pipe = conn.pipeline(transaction=False)
        for src, size in zip(active, sizes, strict=True):
            src.read(pipe, size)
        replies = pipe.execute()
        batches = [src.ids(reply) for src, reply in zip(active, replies, strict=True)]
        pipe = conn.pipeline(transaction=False)
        for ids in batches:
            for job_id in ids:
                pipe.hmget(keys.job(job_id), *_FIELDS)
        values = iter(pipe.execute())
        for src, ids, size in zip(active, batches, sizes, strict=True):
            src.offset += len(ids)
            scanned += len(ids)
            all_old = since is not None and bool(ids)
            for job_id in ids:
                row = _row(src.queue, src.state, job_id, next(values))
                if row is None:
                    continue
                if since is not None and (row.at is None or row.at >= since):
                    all_old = False
                if src.found < limit and _matches(row, wanted, user, since):
                    src.rows.append(row)
                    src.found += 1
            if src.found >= limit or len(ids) < size or all_old:
                src.done = True
            elif src.offset >= bound:
                src.done, truncated = True, True
    rows = [r for s in sources for r in s.rows]
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    rows.sort(key=lambda r: r.at or epoch, reverse=True)
    return JobPage(rows=rows[:limit], scanned=scanned, truncated=truncated)


def _matches(row: JobRow, job_type: str | None, user: str | None, since: dt.datetime | None) -> bool:
    if job_type and row.type != job_type:
        return False
    if user is not None and row.user != user:
        return False
    return since is None or (row.at is not None and row.at >= since)


# ---------------------------------------------------------------- one job

_SECRET_WORDS = ("key", "token", "secret", "password")


def redact_payload(value: Any) -> Any:
    """Values under keys naming a secret (key, token, secret, password) become ``***``."""
    if isinstance(value, dict):
        return {k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else redact_payload(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_payload(v) for v in value]
    return value


@dataclass(frozen=True)
class Attempt:
    attempt: int | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    duration_ms: float | None
    outcome: str | None
    worker: str | None
    error: str | None


@dataclass(frozen=True)
class JobDetail:
    id: str
    type: str | None
    queue: str
    state: str
    user: str | None
    function: str | None
    payload: Any
    created_at: dt.datetime | None
    enqueued_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    worker: str | None
    retries_left: int | None
    timeout: int | None
    attempts: list[Attempt]
    result: Any = None
    error: str | None = None  # the message only; its type is error_type
    error_type: str | None = None
    traceback: str | None = None

    @property
    def status(self) -> str:
        """The job's state (``queued``, ``started``, ``finished``, ``failed`` ...), as RQ names it."""
        return self.state


def _payload(data: bytes | None) -> tuple[str | None, Any]:
    from slimyq.runtime.codec import ClaimedJob, UndecodableJob

    try:
        func, _instance, args, kwargs = ClaimedJob("", "", {"data": data}).call()
    except UndecodableJob as exc:
        return None, f"<{exc}>"
    return func, redact_payload(kwargs if not args else {"args": args, **kwargs})


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(float(value)) if value else None
    except ValueError:
        return None


def _error_type(raw: str | None) -> str | None:
    """The last failed attempt's error type (``access_denied``, ``validation_error``, ...)."""
    found = next((a.get("errorType") for a in reversed(attempts(raw)) if a.get("errorType")), None)
    return str(found) if found is not None else None


def show_job(conn: redis.Redis, job_id: str, *, user: str | None = None, traceback: bool = False) -> JobDetail:
    """One job in full. A job of another ``user`` is reported exactly like a missing one."""
    from slimyq.errors import NotFound

    pipe = conn.pipeline(transaction=False)
    read_job(pipe, job_id)
    detail = job_detail(job_id, pipe.execute(), user=user, traceback=traceback)
    if detail is None:
        raise NotFound(f"job {job_id} not found")
    return detail


def read_job(pipe: Any, job_id: str) -> None:
    """Queue the reads :func:`job_detail` needs on a pipeline (sync or asyncio): one round trip."""
    pipe.hgetall(keys.job(job_id))
    pipe.xrevrange(keys.results(job_id), "+", "-", count=1)


def job_detail(job_id: str, replies: list[Any], *, user: str | None = None,
               traceback: bool = False) -> JobDetail | None:
    """The job from :func:`read_job`'s replies; None when it is missing or belongs to another ``user``."""
    from slimyq.runtime import codec

    raw, results = replies
    info = meta(raw.get(b"meta")) if raw else {}
    owner = str(info["user"]) if info.get("user") is not None else None
    if not raw or (user is not None and owner != user):
        return None
    f = {(text(k) or ""): text(v) for k, v in raw.items() if k != b"data"}
    func, payload = _payload(raw.get(b"data"))
    tries = [
        Attempt(attempt=a.get("attempt"), started_at=when(a.get("startedAt")), ended_at=when(a.get("endedAt")),
                duration_ms=a.get("durationMs"), outcome=a.get("outcome"), worker=a.get("worker"),
                error=(str(a["error"]).strip().splitlines() or [""])[-1][:500] if a.get("error") else None)
        for a in attempts(f.get("slimyq_attempts"))
    ]
    result: Any = None
    error: str | None = None
    tb: str | None = None
    if results:
        entry = {text(k): v for k, v in results[0][1].items()}
        if text(entry.get("type")) == "1":
            result = codec.decode_return_value(entry.get("return_value"))
        else:
            tb = codec.decode_exc_string(entry.get("exc_string"))
            error = codec.failure_text(tb)
    if error is None and f.get("status") == "failed" and tries:
        error = tries[-1].error
    return JobDetail(
        id=job_id,
        type=type_of(info, f.get("description")),
        queue=f.get("origin") or "",
        state=f.get("status") or "unknown",
        user=owner,
        function=func,
        payload=payload,
        created_at=when(f.get("created_at")),
        enqueued_at=when(f.get("enqueued_at")),
        started_at=when(f.get("started_at")),
        ended_at=when(f.get("ended_at")),
        worker=f.get("worker_name") or None,
        retries_left=_int_or_none(f.get("retries_left")),
        timeout=_int_or_none(f.get("timeout")),
        attempts=tries,
        result=result,
        error=error,
        error_type=_error_type(f.get("slimyq_attempts")) if error else None,
        traceback=tb if traceback else None,
    )
