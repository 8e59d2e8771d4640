"""`slimyq queue pause|resume|empty|prune`."""

from __future__ import annotations

from typing import Annotated

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.cli.jobcmd import DryRun, Yes, confirm_or_refuse
from slimyq.render import Format
from slimyq.text import count as jobs

app = typer.Typer(help=GROUP_HELP["queue"], no_args_is_help=True, add_completion=False)

Queue = Annotated[str, typer.Argument(metavar="QUEUE", help="Queue name.")]


def _check(ctx: typer.Context, queue: str) -> None:
    app_of(ctx).settings.queue(queue)  # unknown: a usage error naming the known queues


@app.command("pause")
def pause(ctx: typer.Context, queue: Queue, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Stop workers taking this queue's jobs (within a second); running jobs finish, others go on."""
    from slimyq.inspect import ops

    _check(ctx, queue)
    changed = ops.pause(app_of(ctx).redis, queue)
    _state(queue, True, changed, pick_format(fmt, as_json))


@app.command("resume")
def resume(ctx: typer.Context, queue: Queue, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Let workers take this queue's jobs again."""
    from slimyq.inspect import ops

    _check(ctx, queue)
    changed = ops.resume(app_of(ctx).redis, queue)
    _state(queue, False, changed, pick_format(fmt, as_json))


def _state(queue: str, paused: bool, changed: bool, fmt: Format) -> None:
    if fmt is Format.table:
        word = "paused" if paused else "resumed"
        render.line(f"queue {queue} {word}" if changed else f"queue {queue} was already {word}")
    else:
        render.show({"queue": queue, "paused": paused, "changed": changed}, fmt)


@app.command("empty")
def empty(ctx: typer.Context, queue: Queue, yes: Yes = False, dry_run: DryRun = False,
          fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Delete every queued job of QUEUE (started, scheduled, finished and failed jobs stay)."""
    from slimyq.inspect import ops

    fmt = pick_format(fmt, as_json)
    _check(ctx, queue)
    conn = app_of(ctx).redis
    count = ops.queued_count(conn, queue)
    if dry_run or count == 0:
        _emptied(queue, count, dry_run, fmt)
        return
    confirm_or_refuse(f"delete {jobs(count, 'queued job')} of queue {queue}?", yes)
    _emptied(queue, ops.empty(conn, queue), False, fmt)


def _emptied(queue: str, count: int, dry_run: bool, fmt: Format) -> None:
    if fmt is Format.table:
        what = f"{jobs(count, 'queued job')} of queue {queue}"
        render.line(f"would delete {what}" if dry_run else f"deleted {what}")
    else:
        render.show({"queue": queue, "deleted": 0 if dry_run else count, "count": count, "dry_run": dry_run}, fmt)


@app.command("prune")
def prune(ctx: typer.Context, queue: Queue, dry_run: DryRun = False,
          yes: Annotated[bool, typer.Option("--yes", "-y", hidden=True)] = False,
          fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Trim the finished and failed registries to the retention counts.

    Keeps the newest keep_finished finished and keep_failed failed jobs; deletes the older ones and
    their results, and entries past their expiry.
    """
    from slimyq.inspect import ops

    fmt = pick_format(fmt, as_json)
    _check(ctx, queue)
    app_ = app_of(ctx)
    result = ops.prune(app_.redis, app_.settings, queue, dry_run=dry_run)
    if fmt is Format.table:
        verb = "would remove" if dry_run else "removed"
        render.line(f"{verb} {result.finished_removed} finished (keeping {result.keep_finished}) and "
                    f"{result.failed_removed} failed (keeping {result.keep_failed}) jobs of queue {queue}")
    else:
        render.show(result, fmt)
