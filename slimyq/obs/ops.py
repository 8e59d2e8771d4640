"""Database and OpenAI metrics of this process, summed in memory and sent with the job counters.

Each query or API call adds to in-process sums (a lock and a few dict updates: no I/O); the
worker's completer drains them with the job counters it already sends (:func:`drain` returns the
same ``Stat`` increments as :func:`slimyq.runtime.metrics.increments`), so they reach Redis in the
completion script's round trip and add up across processes and restarts by HINCRBY. They land in
one hash per queue, ``slimyq:ops:<queue>``, with ``|``-separated fields:

- ``db|<backend>|<op>|le|<bound>``, ``db|<backend>|<op>|sum``, ``db|<backend>|<op>|count``: query durations
- ``dberr|<backend>|<op>``: queries that raised
- ``ai|<model>|<outcome>|le|<bound>``, ``...|sum``, ``...|count``: OpenAI request durations
- ``tok|<model>|prompt``, ``tok|<model>|completion``: tokens the API reported
- ``rl|<job_type>``: enqueues refused by the rate limit (written by the producer, not drained here)

Bucket counts are per bucket (made cumulative when read), like the job histogram. The number of
open database connections is a gauge, not a sum: the heartbeat writes it into the worker's own
Redis hash (it goes away with the worker), see :func:`connections`.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import Counter
from collections.abc import Mapping

import redis

from slimyq.runtime import keys
from slimyq.runtime.metrics import Stat

# Upper bounds in seconds (the last bucket is +Inf).
DB_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                 10.0)
OPENAI_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
INF = "+Inf"
SEP = "|"
CONNECTIONS_FIELD = "slimyq_db_connections"  # in the worker hash: ``<field>:<backend>`` -> open connections

_lock = threading.Lock()
_ints: Counter[str] = Counter()
_floats: dict[str, float] = {}
DB_BOUNDS = (*(repr(b) for b in DB_BUCKETS), INF)
AI_BOUNDS = (*(repr(b) for b in OPENAI_BUCKETS), INF)
_open: Counter[str] = Counter()  # backend -> connections open in this process


def label(text: str) -> str:
    """A label value safe inside a field name."""
    return text.replace(SEP, "_")[:100] or "unknown"


_fields: dict[str, tuple[tuple[str, ...], str, str]] = {}  # a histogram's field names: its buckets', count, sum


def _observe(head: str, bounds: tuple[str, ...], buckets: tuple[float, ...], seconds: float) -> None:
    """One duration into histogram ``head`` (the caller holds the lock). Its field names are built
    once (a database's histograms take one duration per statement)."""
    fields = _fields.get(head)
    if fields is None:
        fields = (tuple(f"{head}|le|{b}" for b in bounds), f"{head}|count", f"{head}|sum")
        if len(_fields) < 1024:  # bounded, whatever the model names a job asks for
            _fields[head] = fields
    le, count, total = fields
    _ints[le[bisect.bisect_left(buckets, seconds)]] += 1
    _ints[count] += 1
    _floats[total] = _floats.get(total, 0.0) + seconds


def db_query(backend: str, op: str, seconds: float, error: bool) -> None:
    with _lock:
        _observe(f"db|{backend}|{op}", DB_BOUNDS, DB_BUCKETS, seconds)
        if error:
            _ints[f"dberr|{backend}|{op}"] += 1


def openai_request(model: str, outcome: str, seconds: float, prompt_tokens: int = 0,
                   completion_tokens: int = 0) -> None:
    model = label(model)
    with _lock:
        _observe(f"ai|{model}|{outcome}", AI_BOUNDS, OPENAI_BUCKETS, seconds)
        if prompt_tokens:
            _ints[f"tok|{model}|prompt"] += prompt_tokens
        if completion_tokens:
            _ints[f"tok|{model}|completion"] += completion_tokens


def connection_opened(backend: str) -> None:
    with _lock:
        _open[backend] += 1


def connection_closed(backend: str) -> None:
    with _lock:
        _open[backend] = max(_open[backend] - 1, 0)


def connections() -> dict[str, int]:
    """Open database connections of this process, per backend."""
    with _lock:
        return dict(_open)


def pending() -> bool:
    return bool(_ints or _floats)


def drain(queue: str) -> list[Stat]:
    """Take the sums gathered since the last call, as increments of the queue's ops hash."""
    key = keys.ops(queue)
    with _lock:
        ints, floats = dict(_ints), dict(_floats)
        _ints.clear()
        _floats.clear()
    stats: list[Stat] = [(key, f, "i", str(n)) for f, n in ints.items()]
    stats += [(key, f, "f", f"{v:.9f}") for f, v in floats.items()]
    return stats


def reset_in_child() -> None:
    """A forked child starts with nothing gathered and no connections of its own."""
    global _lock
    _lock = threading.Lock()
    _ints.clear()
    _floats.clear()
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset_in_child)


def count_rejections(conn: redis.Redis, refused: Mapping[tuple[str, str], int]) -> None:
    """Requests the rate limit turned away (``slimyq_ratelimit_rejections_total``), per (queue, job
    type), as :func:`slimyq.ratelimit.turned_away` counts them: written at once by the enqueuing
    process (a rejection is rare, and the CLI has no completer to ride on). Best effort: a failure
    here never hides the rate-limit error itself."""
    if not refused:
        return
    try:
        pipe = conn.pipeline(transaction=False)
        for key, field, n in rejection_increments(refused):
            pipe.hincrby(key, field, n)
        pipe.execute()
    except redis.RedisError:
        pass


def rejection_increments(refused: Mapping[tuple[str, str], int]) -> list[tuple[str, str, int]]:
    """(ops key, field, count) for :func:`count_rejections` (and the asyncio client, which sends
    them on its own connection)."""
    return [(keys.ops(queue), f"rl{SEP}{label(job_type)}", n) for (queue, job_type), n in refused.items()]
