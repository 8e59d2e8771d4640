"""`slimyq audit cleanup|report|list`: audit log maintenance, in-process against the database.

``cleanup`` is the command operators put in cron: on success it prints nothing without a terminal
(its one-line summary on a terminal or with ``-v``; a progress bar on stderr only on a terminal);
when another cleanup holds the lock it does nothing and exits 0 (or waits up to ``--wait-lock``
seconds first), saying so only on a terminal or with ``-v``. Entries strictly older than the
cut-off are deleted; one exactly at the cut-off is kept.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import DATE, SINCE, FormatOption, JsonFlag, VerboseFlag, app_of, parsed, pick_format
from slimyq.errors import UsageError, ValidationFailed
from slimyq.render import Format
from slimyq.timeparse import now_utc, parse_end, parse_instant, parse_since

if TYPE_CHECKING:
    from slimyq.app import App

app = typer.Typer(help=GROUP_HELP["audit"], no_args_is_help=True, add_completion=False)


def _cut_off(days: int | None, before: str | None) -> dt.datetime:
    if (days is None) == (before is None):
        raise UsageError("give exactly one of --days N or --before DATE (e.g. --days 90)")
    if days is not None:
        return now_utc() - dt.timedelta(days=days)
    assert before is not None
    return parsed("--before", before, parse_instant)


@app.command("cleanup")
def cleanup_cmd(
    ctx: typer.Context,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Delete entries older than N days.")] = None,
    before: Annotated[
        str | None, typer.Option("--before", metavar=DATE, help="Delete entries older than this UTC date/time (ISO).")
    ] = None,
    exclude_action: Annotated[
        list[str] | None, typer.Option("--exclude-action", help="Keep entries with this action (repeatable).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would go, with the oldest and newest timestamps.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Entries deleted per transaction.")
    ] = 5000,
    wait_lock: Annotated[
        float,
        typer.Option("--wait-lock", min=0, help="Seconds to wait while another cleanup runs (default: skip)."),
    ] = 0.0,
    enqueue: Annotated[
        bool, typer.Option("--enqueue", help="Send an audit_cleanup job to the audit queue instead.")
    ] = False,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
    verbose: VerboseFlag = False,
) -> None:
    """Delete old audit entries in batches (cron-safe: silent on success without a terminal).

    Exit 0 ok, 1 database error, 2 bad arguments.
    """
    fmt = pick_format(fmt, as_json)
    cut = _cut_off(days, before)
    excluded = _checked_actions(list(dict.fromkeys(exclude_action or [])))
    if enqueue and dry_run:
        raise UsageError("--dry-run cannot be combined with --enqueue (the job always deletes)")
    app_ = app_of(ctx)
    if enqueue:
        _enqueue_cleanup(app_, cut, excluded, batch_size, fmt)
        return
    from slimyq.audit.cleanup import cleanup, preview

    db = app_.db
    if dry_run:
        plan = preview(db, cut, excluded)
        render.line(plan.line()) if fmt is Format.table else render.show(plan, fmt)
        return
    total = preview(db, cut, excluded).would_delete if render.is_tty() and fmt is Format.table else None
    with render.progress("deleting old audit entries", total) as advance:
        result = cleanup(db, cut, excluded, batch_size=batch_size, wait=wait_lock, on_batch=advance)
    render.summary(result.line(), verbose) if fmt is Format.table else render.show(result, fmt)


def _checked_actions(actions: list[str]) -> list[str]:
    """The same rule as an audit_cleanup job's excludeActions (exact actions, never trimmed)."""
    from slimyq.payloads.fields import check_identifier

    problems = []
    for action in actions:
        try:
            check_identifier(action)
        except ValueError as exc:
            problems.append(f"--exclude-action: {action!r} {exc}")
    if problems:
        raise ValidationFailed(problems)
    return actions


def _enqueue_cleanup(app_: App, cut: dt.datetime, excluded: list[str], batch_size: int, fmt: Format) -> None:
    from slimyq.jobs import registry
    from slimyq.payloads.audit import AuditCleanup
    from slimyq.producer import EnqueueRequest, enqueue_one

    job_type = registry.get("audit_cleanup")
    payload = AuditCleanup(before_date=cut, exclude_actions=excluded, batch_size=batch_size)
    done = enqueue_one(app_.redis, app_.settings, EnqueueRequest(job_type, payload, job_type.queue))
    if fmt is Format.table:
        render.line(done.id)
    else:
        render.show({"id": done.id, "type": done.type, "queue": done.queue, "status": done.status}, fmt)


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar=SINCE, help="Period back from now (7d, 24h) or an ISO start. Default 7d."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", metavar=DATE, help="Period start (ISO date/time, UTC).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", metavar=DATE,
                     help="Period end, inclusive (a bare date means its whole day). Default now."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Rows in each top list.")] = 10,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Summary, every action with its failures, top users and resources, failure analysis: in SQL."""
    fmt = pick_format(fmt, as_json)
    if since is not None and (start is not None or end is not None):
        raise UsageError("--since cannot be combined with --start/--end")
    if end is not None and start is None:
        raise UsageError("--end needs --start (or use --since)")
    now = now_utc()
    if start is not None:
        lo = parsed("--start", start, parse_instant)
        hi = parsed("--end", end, parse_end) if end is not None else now
    else:
        lo, hi = parsed("--since", since or "7d", lambda t: parse_since(t, now)), now
    if hi < lo:
        raise UsageError("--end is before --start")
    from slimyq.audit.report import SECTION_RECORDS, build_report

    report = build_report(app_of(ctx).db, lo, hi, top=top)
    columns = {name: render.field_names(record) for name, record in SECTION_RECORDS.items()}
    render.show_sections(report.sections(), fmt, columns=columns)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's entries.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action.")] = None,
    resource_type: Annotated[str | None, typer.Option("--resource-type", help="Only this resource type.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", metavar=SINCE, help="Only newer than this (1d, 2h or an ISO date).")
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed actions.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most N entries.")] = 50,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Recent audit entries, newest first."""
    fmt = pick_format(fmt, as_json)
    lo = parsed("--since", since, parse_since) if since is not None else None
    from slimyq.audit.listing import TABLE_COLUMNS, AuditEntry, list_entries

    entries = list_entries(
        app_of(ctx).db, user=user, action=action, resource_type=resource_type, since=lo, failed=failed, limit=limit
    )
    columns = TABLE_COLUMNS if fmt is Format.table else None
    render.show(entries, fmt, columns=columns, empty="no audit entries match", record=AuditEntry)
