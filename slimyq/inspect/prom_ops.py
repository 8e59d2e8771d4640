"""Prometheus families for the database, OpenAI and rate-limit metrics (:mod:`slimyq.obs.ops`).

Read at scrape time from each queue's ops hash (sums of every worker process, across restarts)
and, for the connection gauge, from the hashes of the queue's live workers. Families are always
present, empty until something was measured, so dashboards and alerts find them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from slimyq.obs.ops import AI_BOUNDS, CONNECTIONS_FIELD, DB_BOUNDS, INF, SEP
from slimyq.runtime import keys

Hist = dict[tuple[str, ...], dict[str, float]]


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _number(raw: Any) -> float:
    try:
        return float(_text(raw))
    except ValueError:
        return 0.0


def read(conn: redis.Redis, queues: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per queue: the ops hash, and the live workers' open connections per backend (two round trips)."""
    pipe = conn.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(keys.ops(q))
        pipe.smembers(keys.workers(q))
    replies = pipe.execute()
    fields = {q: {_text(k): _number(v) for k, v in replies[2 * i].items()} for i, q in enumerate(queues)}
    pipe = conn.pipeline(transaction=False)
    owners: list[str] = []
    for i, q in enumerate(queues):
        for wkey in sorted(_text(w) for w in replies[2 * i + 1]):
            pipe.hgetall(wkey)
            owners.append(q)
    gauges: dict[str, dict[str, float]] = {q: defaultdict(float) for q in queues}
    prefix = f"{CONNECTIONS_FIELD}:"
    for q, worker in zip(owners, pipe.execute() if owners else [], strict=True):
        for k, v in worker.items():
            name = _text(k)
            if name.startswith(prefix):
                gauges[q][name[len(prefix):]] += _number(v)
    return fields, gauges


def _histogram(family: HistogramMetricFamily, queue: str, hist: Hist, bounds: tuple[str, ...]) -> None:
    for labels, f in sorted(hist.items()):
        running = 0.0
        buckets = []
        for bound in bounds:
            running += f.get(f"le{SEP}{bound}", 0.0)
            buckets.append(("+Inf" if bound == INF else bound, running))
        family.add_metric([queue, *labels], buckets, f.get("sum", 0.0))


def collect(conn: redis.Redis, queues: list[str]) -> Iterator[Metric]:
    fields, gauges = read(conn, queues)
    db = HistogramMetricFamily("slimyq_db_query_duration_seconds", "Duration of database statements run by jobs.",
                               labels=["queue", "backend", "operation"])
    db_errors = CounterMetricFamily("slimyq_db_errors", "Database statements that raised.",
                                    labels=["queue", "backend", "operation"])
    connections = GaugeMetricFamily("slimyq_db_connections", "Open database connections of the live workers.",
                                    labels=["queue", "backend"])
    ai = HistogramMetricFamily("slimyq_openai_request_duration_seconds", "Duration of OpenAI API requests.",
                               labels=["queue", "model", "outcome"])
    tokens = CounterMetricFamily("slimyq_openai_tokens", "Tokens the OpenAI API reported, by kind.",
                                 labels=["queue", "model", "kind"])
    rejected = CounterMetricFamily("slimyq_ratelimit_rejections", "Enqueues refused by the rate limit.",
                                   labels=["queue", "type"])
    for q in queues:
        db_hist: Hist = defaultdict(dict)
        ai_hist: Hist = defaultdict(dict)
        for name, value in sorted(fields[q].items()):
            parts = name.split(SEP)
            kind = parts[0]
            if kind == "db" and len(parts) >= 4:
                db_hist[(parts[1], parts[2])][SEP.join(parts[3:])] = value
            elif kind == "ai" and len(parts) >= 4:
                ai_hist[(parts[1], parts[2])][SEP.join(parts[3:])] = value
            elif kind == "dberr" and len(parts) == 3:
                db_errors.add_metric([q, parts[1], parts[2]], value)
            elif kind == "tok" and len(parts) == 3:
                tokens.add_metric([q, parts[1], parts[2]], value)
            elif kind == "rl" and len(parts) == 2:
                rejected.add_metric([q, parts[1]], value)
        _histogram(db, q, db_hist, DB_BOUNDS)
        _histogram(ai, q, ai_hist, AI_BOUNDS)
        for backend, n in sorted(gauges[q].items()):
            connections.add_metric([q, backend], n)
    yield from (db, db_errors, connections, ai, tokens, rejected)
