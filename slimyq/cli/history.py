"""`slimyq history list|stats|prune`: the job history kept in the database (``job_runs``).

The "fetch + render" steps are small public functions (:func:`show_runs`, :func:`show_stats`,
:func:`show_job_runs`, and :func:`check_state`/:func:`type_option` for the
options) so ``slimyq jobs --history``, ``slimyq stats --since`` and ``slimyq job show`` print
exactly what ``slimyq history`` prints.

``prune`` is the command operators put in cron: on success it prints nothing without a terminal
(its one-line summary on a terminal or with ``-v``; a progress bar on stderr only on a terminal).
Exit 0 ok, 1 database error, 2 bad arguments. Rows that ended strictly before the cut-off go; one
ending exactly at it is kept.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import SINCE, FormatOption, JsonFlag, VerboseFlag, app_of, pick_format, since_option
from slimyq.errors import UsageError
from slimyq.render import Format

if TYPE_CHECKING:
    import peewee

app = typer.Typer(help=GROUP_HELP["history"], no_args_is_help=True, add_completion=False)

STATES = ("finished", "failed", "retried", "refused", "canceled", "abandoned", "stopped")  # = db.models.JOB_RUN_STATES
RUN_COLUMNS = ("ended_at", "job_id", "attempt", "queue", "job_type", "state", "user_id", "duration_ms", "error_type")
JOB_COLUMNS = ("attempt", "state", "started_at", "ended_at", "duration_ms", "error_type", "error_message", "worker")


# ---------------------------------------------------------------- shared by other commands


def _for_table(record: Any) -> dict[str, Any]:
    """A record for a table: datetimes as ``YYYY-MM-DD HH:MM:SS`` (UTC); JSON keeps full ISO."""
    items = record.items() if isinstance(record, dict) else vars(record).items()
    return {k: v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, dt.datetime) else v for k, v in items}


def check_state(state: str | None) -> str | None:
    """A history state (``--state``), lower-cased; anything else is a usage error."""
    if state is None:
        return None
    value = state.strip().lower()
    if value not in STATES:
        raise UsageError(f"--state: {state!r} is not a history state; use one of {', '.join(STATES)}")
    return value


def type_option(job_type: str | None) -> str | None:
    """A job type as typed on the command line (``save-message``) to its stored form (``save_message``)."""
    return None if job_type is None else job_type.strip().replace("-", "_")


def show_runs(
    db: peewee.Database,
    fmt: Format,
    *,
    since: dt.datetime | None = None,
    state: str | None = None,
    job_type: str | None = None,
    user: str | None = None,
    queue: str | None = None,
    limit: int = 50,
) -> int:
    """Print recorded attempts, newest first; returns how many were shown."""
    from slimyq.history.queries import RunRecord, list_runs

    runs = list_runs(db, since=since, state=state, job_type=job_type, user=user, queue=queue, limit=limit)
    if fmt is Format.table:
        render.show([_for_table(r) for r in runs], fmt, columns=RUN_COLUMNS, empty="no job runs match")
    else:
        render.show(runs, fmt, record=RunRecord)
    return len(runs)


def show_stats(db: peewee.Database, fmt: Format, *, since: dt.datetime | None, queue: str | None = None) -> None:
    """Print per-queue and per-type counts, failure rates and p50/p95/max durations (ms)."""
    from slimyq.history.queries import RunStatsRow, run_stats

    sections = run_stats(db, since=since, queue=queue).sections()
    if fmt is not Format.table:
        fields = render.field_names(RunStatsRow)
        columns = {"by_queue": [c for c in fields if c != "job_type"], "by_type": fields}
        render.show_sections(sections, fmt, columns=columns)
        return
    titles = {"by_queue": "job runs by queue", "by_type": "job runs by type"}
    for name, data in sections.items():
        render.show(data, fmt, title=titles[name], empty=f"{titles[name]}: none")


def show_job_runs(db: peewee.Database, job_id: str, fmt: Format) -> bool:
    """Print one job's recorded attempts (``job show`` when Redis no longer has the job).

    Returns False, printing nothing, when the history has no attempt of that job.
    """
    from slimyq.history.queries import job_runs_for

    runs = job_runs_for(db, job_id)
    if not runs:
        return False
    if fmt is Format.table:
        last = runs[-1]
        head = {"id": last.job_id, "queue": last.queue, "type": last.job_type, "state": last.state,
                "user_id": last.user_id, "enqueued_at": last.enqueued_at, "attempts": len(runs),
                "source": "history (no longer in Redis)"}
        render.show(_for_table(head), fmt)
        render.show([_for_table(r) for r in runs], fmt, columns=JOB_COLUMNS, title="attempts")
    else:
        render.show(runs, fmt)
    return True


# ---------------------------------------------------------------- commands


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", metavar=SINCE, help="Only newer than this (7d, 24h or an ISO date).")
    ] = None,
    state: Annotated[str | None, typer.Option("--state", help=f"Only this outcome: {', '.join(STATES)}.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only this job type.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's jobs.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most N attempts.")] = 50,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Recorded job attempts, newest first (kept after Redis forgets the jobs)."""
    fmt = pick_format(fmt, as_json)
    lo, st, jt = since_option(since), check_state(state), type_option(job_type)
    show_runs(app_of(ctx).db, fmt, since=lo, state=st, job_type=jt, user=user, queue=queue, limit=limit)


@app.command("stats")
def stats_cmd(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option("--since", metavar=SINCE, help="Period back from now (24h, 7d) or an ISO start.")
    ] = "24h",
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Per queue and per job type: runs, failure rate, p50/p95/max duration (ms), computed in SQL."""
    fmt = pick_format(fmt, as_json)
    show_stats(app_of(ctx).db, fmt, since=since_option(since), queue=queue)


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    days: Annotated[int, typer.Option("--days", min=1, help="Delete attempts that ended more than N days ago.")],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=50_000, help="Rows deleted per transaction.")
    ] = 5000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would go.")] = False,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
) -> None:
    """Delete old job history in batches (cron-safe: silent on success without a terminal).

    Exit 0 ok, 1 database error, 2 bad arguments.
    """
    from slimyq.history.prune import preview, prune_result
    from slimyq.timeparse import now_utc

    fmt = pick_format(fmt, as_json)
    cut = now_utc() - dt.timedelta(days=days)
    db = app_of(ctx).db
    if dry_run:
        plan = preview(db, cut)
        render.line(plan.line()) if fmt is Format.table else render.show(plan, fmt)
        return
    total = preview(db, cut).would_delete if render.is_tty() else None
    with render.progress("deleting old job history", total) as advance:
        result = prune_result(db, cut, batch_size=batch_size, progress=advance)
    render.summary(result.line(), verbose) if fmt is Format.table else render.show(result, fmt)
