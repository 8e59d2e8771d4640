"""Prometheus exposition of queue depths, job counters and duration histograms.

A custom collector reads Redis at scrape time (the same two round trips as ``slimyq stats`` plus
one for the raw histograms); ``write_textfile`` writes atomically (temp file + rename, by
prometheus_client) for node_exporter's textfile collector.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from slimyq.config import Settings
from slimyq.inspect import prom_ops
from slimyq.inspect._common import as_float, as_int
from slimyq.inspect.stats import BUCKET_BOUNDS, counters, histogram_buckets, queue_stats
from slimyq.runtime.metrics import ALL, INF

STATE_FIELDS = ("queued", "started", "scheduled", "deferred", "finished", "failed", "canceled")
OUTCOMES = ("completed", "failed", "retried")


def _le(bound: str) -> str:
    return "+Inf" if bound == INF else repr(int(bound) / 1000)


class QueueCollector(Collector):
    def __init__(self, conn: redis.Redis, settings: Settings, queues: list[str] | None = None) -> None:
        self.conn = conn
        self.settings = settings
        self.queues = queues or settings.queue_names

    def collect(self) -> Iterator[Metric]:
        stats = queue_stats(self.conn, self.settings, self.queues)
        jobs = GaugeMetricFamily("slimyq_queue_jobs", "Jobs per queue and state.", labels=["queue", "state"])
        workers = GaugeMetricFamily("slimyq_workers", "Live workers per queue.", labels=["queue"])
        capacity = GaugeMetricFamily("slimyq_worker_slots", "Job slots of the live workers.", labels=["queue"])
        paused = GaugeMetricFamily("slimyq_queue_paused", "1 when the queue is paused.", labels=["queue"])
        age = GaugeMetricFamily("slimyq_queue_oldest_job_age_seconds", "Age of the oldest queued job.",
                                labels=["queue"])
        for s in stats:
            for state in STATE_FIELDS:
                jobs.add_metric([s.queue, state], getattr(s, state))
            workers.add_metric([s.queue], s.workers)
            capacity.add_metric([s.queue], s.capacity)
            paused.add_metric([s.queue], 1.0 if s.paused else 0.0)
            age.add_metric([s.queue], s.oldest_age_seconds or 0.0)
        yield from (jobs, workers, capacity, paused, age)

        total = CounterMetricFamily("slimyq_jobs", "Job attempts that ended, by outcome.",
                                    labels=["queue", "type", "outcome"])
        for queue, types in counters(self.conn, self.queues).items():
            for job_type, fields in sorted(types.items()):
                if job_type == ALL:
                    continue
                for outcome in OUTCOMES:
                    total.add_metric([queue, job_type, outcome], as_int(fields.get(outcome)))
        yield total

        hist = HistogramMetricFamily("slimyq_job_duration_seconds", "Duration of job attempts that ended.",
                                     labels=["queue", "type"])
        for queue, types in histogram_buckets(self.conn, self.queues).items():
            for job_type, fields in sorted(types.items()):
                if job_type == ALL:
                    continue
                running = 0
                buckets: list[tuple[str, float]] = []
                for bound in BUCKET_BOUNDS:
                    running += as_int(fields.get(f"le:{bound}"))
                    buckets.append((_le(bound), running))
                hist.add_metric([queue, job_type], buckets, as_float(fields.get("sum")))
        yield hist
        yield from prom_ops.collect(self.conn, self.queues)  # database, OpenAI, rate limit


def registry(conn: redis.Redis, settings: Settings, queues: list[str] | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(QueueCollector(conn, settings, queues))
    return reg


def exposition(conn: redis.Redis, settings: Settings, queues: list[str] | None = None) -> str:
    return generate_latest(registry(conn, settings, queues)).decode()


def write_textfile(conn: redis.Redis, settings: Settings, path: Path, queues: list[str] | None = None) -> None:
    """Write the exposition to ``path`` atomically (a temp file in the same folder, renamed)."""
    write_to_textfile(str(path), registry(conn, settings, queues))


def samples(conn: redis.Redis, settings: Settings, queues: list[str] | None = None) -> list[dict[str, Any]]:
    """Every sample as a flat record (for ``--format json|ndjson|csv|table``)."""
    out: list[dict[str, Any]] = []
    for metric in registry(conn, settings, queues).collect():
        for sample in metric.samples:
            out.append({"name": sample.name, "labels": dict(sample.labels), "value": sample.value})
    return out
