"""Audit benchmark rows: batched cleanup beside one ``DELETE ... WHERE timestamp < ?``, and the
report's queries, on SQLite and (when reachable) PostgreSQL.

``run(rows)`` fills ``audit_logs`` with ``rows`` entries, half of them older than the cut-off,
and returns one dict per measurement (printing nothing). Each cleanup runs in a fresh spawned
process, so its peak RSS (``ru_maxrss``) is its own; ``rss_growth_mib`` is the peak minus the RSS
just before the delete started (flat memory means this stays small whatever ``rows`` is).

    python scripts/bench_audit.py 2000000          # the issue's row: 1M of 2M deleted
    SLIMYQ_TEST_PG=postgresql://postgres@127.0.0.1:5432/test python scripts/bench_audit.py 200000
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BASE = dt.datetime(2024, 1, 1)
PG_ADMIN_URL = os.environ.get("SLIMYQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = int(os.environ.get("BENCH_AUDIT_BATCH", "5000"))


def _cut(rows: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=rows // 2)


def _fill(url: str, rows: int) -> None:
    """``rows`` entries one second apart from BASE, generated inside the database (fast)."""
    from slimyq.db import connect_url, migrate

    db = connect_url(url)
    migrate(db)
    db.execute_sql("DELETE FROM audit_logs")
    cols = "id, user_id, action, resource_type, resource_id, details, timestamp, success"
    if url.startswith("sqlite"):
        db.execute_sql(
            f"WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            f"INSERT INTO audit_logs ({cols}) SELECT printf('%036d', i), 'u' || (i % 1000), "
            f"'action_' || (i % 10), 'type_' || (i % 5), CAST(i AS TEXT), '{{}}', "
            f"datetime(?, '+' || i || ' seconds'), CASE WHEN i % 20 = 0 THEN 0 ELSE 1 END FROM c",
            (rows - 1, BASE.isoformat(sep=" ")),
        )
        db.execute_sql("ANALYZE")
    else:
        db.execute_sql(
            f"INSERT INTO audit_logs ({cols}) SELECT lpad(i::text, 36, '0'), 'u' || (i %% 1000), "
            f"'action_' || (i %% 10), 'type_' || (i %% 5), i::text, '{{}}', "
            f"%s::timestamp + i * interval '1 second', i %% 20 <> 0 FROM generate_series(0, %s) AS i",
            (BASE, rows - 1),
        )
        db.execute_sql("ANALYZE audit_logs")
    db.close()


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(url: str, mode: str, cut: dt.datetime, out: Any) -> None:
    from slimyq.audit.cleanup import cleanup
    from slimyq.db import AuditLog, connect_url, database_proxy

    db = connect_url(url)
    database_proxy.initialize(db)
    AuditLog.select().limit(1).execute()  # warm the connection and the model
    before = _rss_mib()
    t0 = time.perf_counter()
    if mode == "batched":
        deleted = cleanup(db, cut, batch_size=BATCH).deleted
    else:
        with db.atomic():
            deleted = AuditLog.delete().where(AuditLog.timestamp < cut).execute()
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    db.close()
    out.put({"seconds": elapsed, "deleted": deleted, "peak_rss_mib": peak, "rss_growth_mib": peak - before})


def _measure(url: str, mode: str, cut: dt.datetime) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(url, mode, cut, queue))
    proc.start()
    result: dict[str, Any] = queue.get(timeout=3600)
    proc.join()
    return result


def _report_rows(url: str, backend: str, rows: int) -> list[dict[str, Any]]:
    from slimyq.audit.report import build_report
    from slimyq.db import connect_url, database_proxy

    db = connect_url(url)
    database_proxy.initialize(db)
    t0 = time.perf_counter()
    report = build_report(db, BASE, BASE + dt.timedelta(seconds=rows))
    total = time.perf_counter() - t0
    db.close()
    out = [
        {"backend": backend, "what": f"report: {name}", "rows": report.summary.total, "seconds": round(sec, 3)}
        for name, sec in report.timings.items()
    ]
    out.append({"backend": backend, "what": "report: all sections", "rows": report.summary.total,
                "seconds": round(total, 3)})
    return out


def _backend(url: str, backend: str, rows: int) -> list[dict[str, Any]]:
    cut = _cut(rows)
    results: list[dict[str, Any]] = []
    _fill(url, rows)
    results += _report_rows(url, backend, rows)
    for mode in ("batched", "single"):
        if mode != "batched":
            _fill(url, rows)
        m = _measure(url, mode, cut)
        what = f"cleanup batched ({BATCH}/batch)" if mode == "batched" else "single DELETE ... WHERE timestamp < ?"
        results.append({
            "backend": backend, "what": what, "rows": rows, "deleted": m["deleted"],
            "seconds": round(m["seconds"], 3), "peak_rss_mib": round(m["peak_rss_mib"], 1),
            "rss_growth_mib": round(m["rss_growth_mib"], 1),
        })
    batched, single = results[-2], results[-1]
    if single["seconds"]:
        batched["vs_single"] = round(batched["seconds"] / single["seconds"], 2)
    return results


def _pg_database() -> tuple[str, Any] | None:
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception:
        return None
    name = f"slimyq_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", drop


def run(rows: int) -> list[dict[str, Any]]:
    """Measure cleanup and report on SQLite and PostgreSQL (skipped when unreachable)."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results += _backend(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", "sqlite", rows)
    pg = _pg_database()
    if pg is not None:
        url, drop = pg
        try:
            results += _backend(url, "postgresql", rows)
        finally:
            drop()
    return results


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    for row in run(n):
        print(row)
