"""Write-behind recording of job attempts into ``job_runs``: jobs never wait for the database.

:meth:`HistoryRecorder.record` appends a :class:`RunRow` to a bounded in-memory buffer and
returns at once (it never blocks on I/O and never raises). A background thread writes the buffer
every ``flush_every`` seconds, or as soon as ``batch`` rows are waiting, with one
``INSERT ... ON CONFLICT IGNORE`` per batch in its own transaction; ``(job_id, attempt)`` is
unique, so a batch written twice (a retry after a lost commit reply) inserts nothing twice.

During a database outage the rows stay in the buffer and the thread retries with exponential
backoff, logging once when the outage starts and once when it ends. When the buffer is full the
*oldest* rows are dropped and counted in :attr:`HistoryRecorder.dropped`. :meth:`close` writes
what it can within its timeout (graceful shutdown) and stops the thread.

Times in a :class:`RunRow` are epoch seconds (``time.time()`` floats, what the worker measures);
aware or naive-UTC datetimes are accepted too. They are stored as naive UTC.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import peewee

from slimyq.db.sqlite import SerializedSqliteDatabase, unforked
from slimyq.history.rows import ERROR_MESSAGE_MAX, RunRow, Stamp, row_values

__all__ = ["ERROR_MESSAGE_MAX", "HistoryRecorder", "RecorderStats", "RunRow", "Stamp", "row_values"]

log = logging.getLogger("slimyq.history")


class RecorderStats(NamedTuple):
    buffered: int  # rows waiting to be written
    dropped: int  # rows lost since start (buffer full, or recorded after close)
    last_error: str | None  # the database error of the current outage; None once a write succeeds


def _reason(exc: BaseException) -> str:
    from slimyq.db.connect import short_reason

    try:
        return short_reason(exc)
    except Exception:
        return type(exc).__name__


class HistoryRecorder:
    """A bounded write-behind buffer of :class:`RunRow` and the thread that writes it.

    ``db_factory`` returns the database to write to (called in the writer thread, again after an
    error); it may return the process's shared database: only the writer thread's own connection
    is ever closed. At most ``max_buffer`` rows wait, plus the one batch being written; beyond
    that the oldest are dropped (and counted), so the newest ``max_buffer`` rows survive.
    """

    def __init__(
        self,
        db_factory: Callable[[], peewee.Database],
        *,
        flush_every: float = 1.0,
        batch: int = 500,
        max_buffer: int = 100_000,
        max_backoff: float = 10.0,
    ) -> None:
        if batch < 1 or max_buffer < 1 or flush_every <= 0:
            raise ValueError("batch and max_buffer must be >= 1 and flush_every > 0")
        self._factory = db_factory
        self.flush_every = flush_every
        self.batch = batch
        self.max_buffer = max_buffer
        self.max_backoff = max_backoff
        self.dropped = 0  # rows lost: the oldest when the buffer was full, or recorded after close
        self.written = 0  # rows handed to the database (duplicates ignored there included)
        self.last_error: str | None = None
        self._buf: deque[RunRow] = deque()
        self._inflight = 0  # rows taken out of the buffer by a write in progress
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._deadline = 0.0
        self._db: peewee.Database | None = None
        self._sqlite: bool | None = None  # is self._db SQLite (None: not opened yet)
        self._outage_logged = False
        self._flush_now = False
        self._drops_seen = 0
        self._drop_warned = False
        self._thread = threading.Thread(target=self._run, name="slimyq-history", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producers

    def record(self, row: RunRow) -> None:
        """Queue one row for writing. Never blocks on I/O, never raises."""
        try:
            with self._cond:
                if self._closing:
                    self.dropped += 1
                    return
                self._buf.append(row)
                if len(self._buf) > self.max_buffer:  # rows being written are older: see _put_back
                    self._buf.popleft()
                    self.dropped += 1
                if len(self._buf) >= self.batch:
                    self._cond.notify_all()
        except Exception:  # pragma: no cover - a bug here must not fail a job
            log.exception("job history: could not buffer a row")

    def stats(self) -> RecorderStats:
        with self._cond:
            return RecorderStats(len(self._buf) + self._inflight, self.dropped, self.last_error)

    def flush(self, timeout: float = 5.0) -> bool:
        """Ask for an immediate write and wait until the buffer is empty (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while self._buf or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def close(self, timeout: float = 5.0) -> int:
        """Write everything the database accepts within ``timeout`` seconds, then stop the thread.

        Returns the number of rows left unwritten (0 after a clean flush); they count as dropped.
        Idempotent.
        """
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        with self._cond:
            left = len(self._buf) + self._inflight
            if not self._closed and left:
                log.warning("job history: %d row(s) could not be written before shutdown", left)
                self.dropped += len(self._buf)
                self._buf.clear()
            self._closed = True
            return left

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        failures = 0
        due = time.monotonic() + self.flush_every
        while True:
            with self._cond:
                while not self._closing:
                    now = time.monotonic()
                    if self._buf and (len(self._buf) >= self.batch or self._flush_now or now >= due):
                        break
                    if not self._buf:
                        due = now + self.flush_every
                    self._cond.wait(max(due - now, 0.005))
                self._flush_now = False
                if self._closing and (not self._buf or time.monotonic() >= self._deadline):
                    break
                rows = [self._buf.popleft() for _ in range(min(self.batch, len(self._buf)))]
                self._inflight = len(rows)
            with self._unforked():
                left = self._write(rows)
            with self._cond:
                self._inflight = 0
                self._put_back(left)
                self._cond.notify_all()
            self._log_drops()
            if not left:
                failures = 0
                due = time.monotonic() + self.flush_every
                continue
            failures += 1
            self._backoff(min(self.max_backoff, 0.25 * 2 ** min(failures - 1, 16)))
            due = time.monotonic()
        self._release()

    def _unforked(self) -> contextlib.AbstractContextManager[None]:
        """Hold a ``--fork`` worker's forks off while this thread works with SQLite (see
        :func:`slimyq.db.sqlite.unforked`); not once the database is known to be another."""
        return unforked() if self._sqlite is not False else contextlib.nullcontext()

    def _backoff(self, pause: float) -> None:
        """Wait ``pause`` seconds; a close() cuts it short once (then waits only up to its deadline)."""
        end = time.monotonic() + pause
        with self._cond:
            was_closing = self._closing
            while True:
                limit = min(end, self._deadline) if self._closing else end
                now = time.monotonic()
                if now >= limit or (self._closing and not was_closing):
                    return
                self._cond.wait(limit - now)

    def _put_back(self, rows: list[RunRow]) -> None:
        """Return unwritten rows to the front of the buffer, dropping the oldest beyond the bound."""
        if not rows:
            return
        room = max(self.max_buffer - len(self._buf), 0)
        keep = rows[len(rows) - room :] if room < len(rows) else rows
        self.dropped += len(rows) - len(keep)
        self._buf.extendleft(reversed(keep))

    def _write(self, rows: list[RunRow]) -> list[RunRow]:
        """Insert ``rows``; returns those to try again later (empty when done)."""
        now = time.time()
        good: list[tuple[RunRow, dict[str, Any]]] = []
        for row in rows:
            try:
                good.append((row, row_values(row, now)))
            except Exception:
                self._reject(1, f"malformed row for job {getattr(row, 'job_id', '?')!r}")
        try:
            db = self._db if self._db is not None else self._factory()
            self._db = db
            self._sqlite = isinstance(db, SerializedSqliteDatabase)
            try:
                _insert(db, [v for _, v in good])
            except (peewee.IntegrityError, peewee.DataError):
                return self._write_singly(db, good)
        except Exception as exc:
            self._on_error(exc)
            return [r for r, _ in good]
        self._on_success(len(good))
        return []

    def _write_singly(self, db: peewee.Database, good: list[tuple[RunRow, dict[str, Any]]]) -> list[RunRow]:
        """A batch the database rejected as data (not an outage): one row at a time, so one bad
        row (say an out-of-range number) cannot hold back the others forever."""
        for n, (row, values) in enumerate(good):
            try:
                _insert(db, [values])
            except (peewee.IntegrityError, peewee.DataError) as exc:
                self._reject(1, f"job {row.job_id!r} attempt {row.attempt}: {_reason(exc)}")
            except Exception as exc:
                self._on_error(exc)
                return [r for r, _ in good[n:]]
        self._on_success(len(good))
        return []

    def _reject(self, count: int, why: str) -> None:
        with self._cond:
            self.dropped += count
        log.warning("job history: row dropped, the database refused it (%s)", why)

    def _on_success(self, count: int) -> None:
        self.written += count
        if self._outage_logged:
            log.warning("job history: database reachable again; the held rows are written")
        self.last_error = None
        self._outage_logged = False

    def _on_error(self, exc: BaseException) -> None:
        self.last_error = _reason(exc)
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "job history: cannot write to the database (%s); holding up to %d rows and retrying",
                self.last_error,
                self.max_buffer,
            )
        self._release()

    def _release(self) -> None:
        """Close this thread's connection (after an error, or at the end); never raises."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            with self._unforked():
                db.close()
        except Exception:
            log.debug("job history: closing the connection failed", exc_info=True)

    def _log_drops(self) -> None:
        """Once per episode (until the backlog is written): say that rows are being dropped."""
        with self._cond:
            dropped, backlog = self.dropped, bool(self._buf)
        if dropped > self._drops_seen and not self._drop_warned:
            self._drop_warned = True
            log.warning("job history: buffer full; %d oldest row(s) dropped so far", dropped)
        self._drops_seen = dropped
        if not backlog and not self._outage_logged:
            self._drop_warned = False

_INSERT_SQL: dict[tuple[type, tuple[str, ...]], str | None] = {}


def _insert(db: peewee.Database, values: list[dict[str, Any]]) -> None:
    """One ``INSERT ... ON CONFLICT IGNORE`` for ``values`` (:func:`row_values`), in its own transaction.

    The statement is built by peewee once per database class and column set and sent with
    ``executemany``, each row as its values are (building a many-row insert with peewee cost
    more CPU than the rest of a trivial job, and so did each value's ``db_value``):
    :func:`row_values` makes them what the fields' ``db_value`` would (str, int, float, naive
    datetime, None), and the statement is only used where peewee, given the first row, asked for
    exactly its values in exactly its order."""
    if not values:
        return
    from slimyq.db.models import JobRun

    cols = tuple(values[0])
    key = (type(db), cols)
    if key not in _INSERT_SQL:
        query = JobRun.insert(values[0]).on_conflict_ignore().as_rowcount()
        text, params = db.get_sql_context().sql(query).query()  # type: ignore[no-untyped-call]
        _INSERT_SQL[key] = text if tuple(params) == tuple(values[0].values()) else None
    sql = _INSERT_SQL[key]
    rows = [tuple(v.values()) for v in values if len(v) == len(cols)]
    if sql is None or len(rows) != len(values):  # a shape this fast path does not know: peewee's own
        with db.atomic():
            JobRun.insert_many(values).on_conflict_ignore().as_rowcount().execute(db)
        return
    with db.atomic(), peewee.__exception_wrapper__:  # type: ignore[attr-defined]
        db.cursor().executemany(sql, rows)  # type: ignore[no-untyped-call]
