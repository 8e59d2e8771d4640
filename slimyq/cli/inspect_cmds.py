"""`slimyq stats`, `slimyq workers`, `slimyq jobs`, `slimyq check`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from slimyq import render
from slimyq.cli._options import (
    DURATION,
    SINCE,
    FormatOption,
    JsonFlag,
    VerboseFlag,
    app_of,
    parsed,
    pick_format,
    since_option,
)
from slimyq.errors import UsageError
from slimyq.render import Format
from slimyq.text import count

STATES = ("queued", "started", "scheduled", "deferred", "finished", "failed", "canceled")


BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def _queues(settings: Any, names: list[str] | None) -> list[str]:
    for name in names or []:
        if name.lower() in BOOL_WORDS and name not in settings.queues:
            raise UsageError(f"{name!r} is not a queue: flags such as --json take no value (write --json, "
                             f"not --json {name})")
        if name not in settings.queues:
            raise UsageError(f"unknown queue {name!r}; known queues: {', '.join(settings.queue_names)}")
    return list(names or settings.queue_names)


def stats(
    ctx: typer.Context,
    queues: Annotated[list[str] | None, typer.Argument(metavar="QUEUE", help="Queues to show (default: all).")] = None,
    by_type: Annotated[bool, typer.Option("--by-type", help="Add a per-job-type breakdown.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh in place until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")] = 2.0,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar=SINCE, help="Instead: counts, failure rates and durations from the job "
                     "history in the database over this period (24h, 7d or an ISO date)."),
    ] = None,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Show depth, speed and health of each queue.

    Queued, started and scheduled jobs; done and failed: every job that finished or failed since the
    counters began (the finished/failed registries keep only the newest 50/100: `finished` and
    `failed` in JSON); live workers and configured concurrency, paused, the oldest queued job's
    age, success rate, p50/p95 duration and jobs per minute over the last 1, 5 and 15 minutes.
    With --since, per queue and job type figures computed in SQL from the job_runs table, which
    outlives Redis retention.
    """
    from slimyq.inspect.stats import QueueStats, TypeStats, queue_stats

    app_ = app_of(ctx)
    fmt = pick_format(fmt, as_json)
    names = _queues(app_.settings, queues)
    if since is not None:
        from slimyq.cli.history import show_stats

        show_stats(app_.db, fmt, since=since_option(since), queue=names[0] if len(names) == 1 else None)
        return

    def read() -> list[dict[str, Any]]:
        return [_table_row(s) for s in queue_stats(app_.redis, app_.settings, names)]

    if watch and fmt is Format.table:
        render.live(read, fmt, interval=interval, title="queues")
        return
    data = queue_stats(app_.redis, app_.settings, names, by_type=by_type)
    if fmt in (Format.json, Format.ndjson):  # always one record per queue; --by-type nests a by_type list
        render.show(data if by_type else _without_types(data), fmt)
        return
    queues_part: Any = [_table_row(s) for s in data] if fmt is Format.table else _without_types(data)
    if not by_type:
        render.show(queues_part, fmt, empty="no queues")
        return
    types: Any = [t for s in data for t in s.by_type]
    if fmt is Format.table:
        types = [{"queue": t.queue, "type": t.type, "done": t.completed, "failed": t.failed, "retried": t.retried,
                  "ok%": t.success_rate, "avg": short_duration(t.avg_seconds), "p50": short_duration(t.p50_seconds),
                  "p95": short_duration(t.p95_seconds), "per_min": f"{t.per_min_1:g}/{t.per_min_5:g}/{t.per_min_15:g}"}
                 for t in types]
    columns = {"queues": [c for c in render.field_names(QueueStats) if c != "by_type"],
               "by_type": render.field_names(TypeStats)}  # csv: flat rows with a section column, a fixed header
    render.show_sections({"queues": queues_part, "by_type": types}, fmt, columns=columns)


_UNITS = (("ms", 0.001, 1000.0), ("s", 1.0, 60.0), ("m", 60.0, 60.0), ("h", 3600.0, 24.0))


def short_duration(value: float | None) -> str | None:
    """A duration for tables, to 3 significant figures in the largest unit it reaches: ``0.850ms``,
    ``12.5ms``, ``3.00s``, ``62.9s`` is ``1.05m``, ``2.50h``, ``3.20d`` (JSON keeps seconds). The
    rounding is at most 0.5% off, so a p95 within the sketch's 4% still reads within 5%."""
    if value is None:
        return None
    for unit, size, limit in _UNITS:
        amount = value / size
        shown = float(f"{amount:.3g}")
        if shown < limit:
            return _figures(shown, unit)
        if amount < limit:  # 59.96 s rounds to 60.0 s: that is 1.00m exactly
            value = limit * size
    return _figures(float(f"{value / 86400:.3g}"), "d")


def _figures(shown: float, unit: str) -> str:
    text = f"{shown:#.3g}" if shown < 1000 else f"{shown:.0f}"
    return f"{text.rstrip('.')}{unit}"


def _table_row(s: Any) -> dict[str, Any]:
    return {
        "queue": s.queue + (" (paused)" if s.paused else ""),
        "queued": s.queued,
        "started": s.started,
        "sched": s.scheduled + s.deferred,
        "done": s.completed_total,
        "failed": s.failed_total,
        "workers": f"{s.workers}x{s.concurrency}",
        "oldest": short_duration(s.oldest_age_seconds),
        "ok%": s.success_rate,
        "p50": short_duration(s.p50_seconds),
        "p95": short_duration(s.p95_seconds),
        "per_min": f"{s.per_min_1:g}/{s.per_min_5:g}/{s.per_min_15:g}",
    }


def ago(value: dt.datetime | None) -> str | None:
    """A compact age for tables: ``12s``, ``3.50m``, ``2.00h`` (JSON keeps the timestamp)."""
    if value is None:
        return None
    age = max((dt.datetime.now(dt.UTC) - value).total_seconds(), 0.0)
    return f"{age:.0f}s" if age < 60 else short_duration(age)


def _without_types(data: list[Any]) -> list[dict[str, Any]]:
    out = render.jsonable(data)
    for row in out:
        row.pop("by_type", None)
    return list(out)


def workers(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """List live workers: name (host, pid), queues, state, current jobs, jobs done, last heartbeat.

    A worker whose heartbeat stops disappears within about a heartbeat period.
    """
    from slimyq.inspect.workers import list_workers

    app_ = app_of(ctx)
    fmt = pick_format(fmt, as_json)
    data = list_workers(app_.redis, app_.settings.worker.heartbeat)
    if fmt is Format.table:
        rows = [{"name": w.name, "queues": ",".join(w.queues), "state": w.state, "slots": w.concurrency,
                 "current_jobs": " ".join(w.current_jobs) or None, "jobs_done": w.jobs_done, "failed": w.failed,
                 "heartbeat": ago(w.last_heartbeat)}
                for w in data]
        render.show(rows, fmt, empty="no live workers")
        return
    from slimyq.inspect.workers import WorkerInfo

    render.show(data, fmt, record=WorkerInfo)


def jobs(
    ctx: typer.Context,
    queue: Annotated[str | None, typer.Argument(metavar="QUEUE", help="Queue (default: all).")] = None,
    state: Annotated[list[str] | None, typer.Option("--state", "-s", help=f"Repeatable: {', '.join(STATES)}.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", "-t", help="Only this job type.")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's jobs.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar=SINCE, help="Only newer than this (1h, 2d or an ISO date).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="At most this many rows.")] = 20,
    history: Annotated[
        bool, typer.Option("--history", help="List recorded attempts from the database's job history instead "
                           "(states: finished, failed, retried, refused, canceled, abandoned).")
    ] = False,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """List jobs newest first across the chosen states.

    Work per call is bounded whatever the queue size: each queue/state is read newest first and
    at most min(10 x limit, 10,000) jobs are examined per queue and state when filtering by type,
    user or time (a note on stderr says when the bound cut the listing short). With --history,
    every recorded attempt from the job_runs table, long after Redis has forgotten the job.
    """
    from slimyq.inspect.jobs import list_jobs

    app_ = app_of(ctx)
    fmt = pick_format(fmt, as_json)
    names = _queues(app_.settings, [queue] if queue else None)
    if history:
        from slimyq.cli.history import check_state, show_runs, type_option

        if state and len(state) > 1:
            raise UsageError("--state: give one state with --history")
        show_runs(app_.db, fmt, since=since_option(since), state=check_state(state[0] if state else None),
                  job_type=type_option(job_type), user=user, queue=queue, limit=limit)
        return
    for s in state or []:
        if s not in STATES:
            raise UsageError(f"--state: unknown state {s!r} (one of {', '.join(STATES)})")
    if job_type:
        from slimyq.jobs import registry

        registry.get(job_type)
    page = list_jobs(app_.redis, names, states=state or None, job_type=job_type, user=user,
                     since=since_option(since), limit=limit)
    if fmt is Format.table:
        rows: Any = [{"id": j.id, "queue": j.queue, "state": j.state, "type": j.type, "user": j.user,
                      "age": ago(j.at), "tries": j.attempts, "error": j.error} for j in page.rows]
    else:
        rows = page.rows
    from slimyq.inspect.jobs import JobRow

    render.show(rows, fmt, empty="no jobs", record=JobRow)
    if page.truncated:
        render.note(f"note: stopped after examining {page.scanned} jobs; narrow with --state/--since or raise --limit")


def check(
    ctx: typer.Context,
    max_age: Annotated[
        str, typer.Option("--max-age", metavar=DURATION, help="Oldest queued job may wait this long.")
    ] = "5m",
    max_backlog: Annotated[int | None, typer.Option("--max-backlog", min=0, help="Most jobs queued per queue.")] = None,
    max_failure_rate: Annotated[
        float | None, typer.Option("--max-failure-rate", min=0, max=100, help="Most failed jobs, percent.")
    ] = None,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
) -> None:
    """Health check: exit 0 healthy, 1 not (cron, systemd, probes).

    Healthy: nothing printed without a terminal (the warnings and a summary on a terminal or with
    -v). Unhealthy: one line per problem on stderr, exit 1.
    """
    from slimyq.inspect.health import check as run_check

    app_ = app_of(ctx)
    fmt = pick_format(fmt, as_json)
    from slimyq.timeparse import parse_duration

    age = parsed("--max-age", max_age, parse_duration).total_seconds()
    health = run_check(app_.settings, lambda: app_.redis, max_age=age, max_backlog=max_backlog,
                       max_failure_rate=max_failure_rate)
    if fmt is Format.table:
        _report_health(health, verbose)
    elif fmt is Format.json:
        render.show(health, fmt)
    else:
        from slimyq.inspect.health import Problem

        render.show(health.problems, fmt, record=Problem)
    if not health.healthy:
        raise typer.Exit(1)


def _report_health(health: Any, verbose: bool) -> None:
    errors = sum(1 for p in health.problems if p.level == "error")
    if errors:
        for p in health.problems:
            (render.error if p.level == "error" else render.warn)(p.message)
        return
    for p in health.problems:
        render.summary(f"{p.level}: {p.message}", verbose)
    render.summary(f"healthy: {count(health.queues, 'queue')}, {count(health.workers, 'live worker')}", verbose)


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
    app.command("workers")(workers)
    app.command("jobs")(jobs)
    app.command("check")(check)
