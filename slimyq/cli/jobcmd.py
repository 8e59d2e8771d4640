"""`slimyq job show|requeue|cancel|delete`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.errors import NotFound, UsageError
from slimyq.render import Format
from slimyq.text import count

app = typer.Typer(help=GROUP_HELP["job"], no_args_is_help=True, add_completion=False)

Ids = Annotated[list[str] | None, typer.Argument(help="Job ids.", show_default=False)]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only count what would be touched.")]


def interactive() -> bool:
    return sys.stdin.isatty()


def confirm_or_refuse(question: str, yes: bool) -> None:
    """Ask ``question`` unless ``yes``; without a terminal to ask on, refuse (exit 2)."""
    if yes:
        return
    if not interactive():
        raise UsageError(f"{question.rstrip('?')}: needs confirmation; no terminal to ask on, pass --yes")
    if not render.confirm(question):
        render.line("nothing done")
        raise typer.Exit(1)


def _from_history(ctx: typer.Context, job_id: str, user: str | None, fmt: Format) -> bool:
    """Redis no longer holds the job: show its recorded attempts, if the history has them.

    Another user's job stays "not found" here too (same output, same exit code).
    """
    app_ = app_of(ctx)
    if not app_.settings.history:
        return False
    from slimyq.cli.history import show_job_runs
    from slimyq.history.queries import job_runs_for

    runs = job_runs_for(app_.db, job_id)
    if not runs or (user is not None and any(r.user_id != user for r in runs)):
        return False
    render.note("Redis no longer holds this job; these are its attempts from the job history")
    return show_job_runs(app_.db, job_id, fmt)


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help="Job id.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only if the job belongs to this user.")] = None,
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the full traceback of a failure.")] = False,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Show a job: type, queue, state, user, payload (secrets redacted), attempts, result or error.

    With --user, another user's job reads exactly like a job that does not exist (exit 1).
    """
    fmt = pick_format(fmt, as_json)
    job = app_of(ctx).client.job(job_id, user, traceback=traceback) if _valid_id(job_id) else None
    if job is None:  # missing, or another user's: the same answer
        if _valid_id(job_id) and _from_history(ctx, job_id, user, fmt):
            return
        raise NotFound(f"job {job_id} not found")
    if fmt is Format.json:
        data = render.jsonable(job)
        if not traceback:
            data.pop("traceback", None)
        render.show(data, fmt)
        return
    head = {k: v for k, v in render.jsonable(job).items() if k not in ("attempts", "payload", "traceback")}
    sections: dict[str, Any] = {"job": head, "payload": job.payload if isinstance(job.payload, dict) else
                                {"payload": job.payload}}
    if job.attempts:
        sections["attempts"] = job.attempts
    render.show_sections(sections, fmt)
    if job.traceback and fmt is Format.table:
        render.line("traceback:")
        render.line(job.traceback.rstrip())


def _valid_id(job_id: str) -> bool:
    from slimyq.runtime.codec import JOB_ID

    return bool(JOB_ID.match(job_id))


def _report(results: list[Any], fmt: Format) -> None:
    if fmt is Format.table:
        for r in results:
            render.line(f"{r.id}: {r.outcome}")
    else:
        render.show(results, fmt)
    if any(not r.ok for r in results):
        raise typer.Exit(1)


def _bulk_ids(ctx: typer.Context, failed: str, job_type: str | None, verb: str, yes: bool, dry_run: bool,
              fmt: Format) -> list[str] | None:
    from slimyq.inspect.ops import failed_ids

    app_ = app_of(ctx)
    app_.settings.queue(failed)
    if job_type:
        from slimyq.jobs import registry

        registry.get(job_type)
    ids = failed_ids(app_.redis, failed, job_type)
    what = f"{count(len(ids), 'failed job')} of queue {failed}" + (f" (type {job_type})" if job_type else "")
    if dry_run or not ids:
        if fmt is Format.table:
            render.line(f"would {verb} {what}" if dry_run else f"no failed jobs to {verb}")
        else:
            render.show({"queue": failed, "type": job_type, "count": len(ids), "dry_run": dry_run}, fmt)
        return None
    confirm_or_refuse(f"{verb} {what}?", yes)
    return ids


def _ids_or_bulk(ids: list[str] | None, failed: str | None) -> list[str]:
    if failed and ids:
        raise UsageError("give job ids or --failed QUEUE, not both")
    if not failed and not ids:
        raise UsageError("give one or more job ids, or --failed QUEUE")
    return ids or []


@app.command("requeue")
def requeue(
    ctx: typer.Context,
    ids: Ids = None,
    failed: Annotated[str | None, typer.Option("--failed", metavar="QUEUE", help="Every failed job of QUEUE.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", "-t", help="With --failed: only this job type.")] = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Put jobs back on their queue (from failed, finished, canceled, scheduled, or a dead worker).

    Retries are reset to the queue's attempts; the attempt history is kept. A started job whose
    worker is alive is left alone.
    """
    from slimyq.inspect import ops

    fmt = pick_format(fmt, as_json)
    targets = _ids_or_bulk(ids, failed)
    if failed:
        found = _bulk_ids(ctx, failed, job_type, "requeue", yes, dry_run, fmt)
        if found is None:
            return
        targets = found
    app_ = app_of(ctx)
    _report(ops.requeue(app_.redis, app_.settings, targets), fmt)


@app.command("cancel")
def cancel(ctx: typer.Context, ids: Annotated[list[str], typer.Argument(help="Job ids.")],
           fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Cancel queued or scheduled jobs (they move to the canceled registry; running jobs are refused)."""
    from slimyq.inspect import ops

    _report(ops.cancel(app_of(ctx).redis, ids), pick_format(fmt, as_json))


@app.command("delete")
def delete(
    ctx: typer.Context,
    ids: Ids = None,
    failed: Annotated[str | None, typer.Option("--failed", metavar="QUEUE", help="Every failed job of QUEUE.")] = None,
    job_type: Annotated[str | None, typer.Option("--type", "-t", help="With --failed: only this job type.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete even a job a live worker is running.")] = False,
    yes: Yes = False,
    dry_run: DryRun = False,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
) -> None:
    """Delete jobs from every queue and registry, with their results."""
    from slimyq.inspect import ops

    fmt = pick_format(fmt, as_json)
    targets = _ids_or_bulk(ids, failed)
    if failed:
        found = _bulk_ids(ctx, failed, job_type, "delete", yes, dry_run, fmt)
        if found is None:
            return
        targets = found
    _report(ops.delete(app_of(ctx).redis, targets, force=force), fmt)
