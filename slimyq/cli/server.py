"""`slimyq server start|status|stop`: the embedded Valkey server used when no REDIS_URL is set."""

from __future__ import annotations

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.redact import redact_url
from slimyq.render import Format

app = typer.Typer(help=GROUP_HELP["server"], no_args_is_help=True, add_completion=False)


@app.command("start")
def start(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Start the embedded Valkey server in the data dir and leave it running.

    Does nothing if it is already running. Other commands start it on first need anyway; this is for
    starting it ahead of time. With REDIS_URL set there is nothing to start (exit 2).
    """
    from slimyq import server

    settings = app_of(ctx).settings
    fmt = pick_format(fmt, as_json)
    was_running = False if settings.redis_url else server.status(settings).running
    state = server.start(settings)
    if fmt is Format.table:
        verb = "already running" if was_running else "started"
        render.line(f"embedded valkey {verb}: pid {state.pid}, socket {state.socket}")
    else:
        render.show(state, fmt)


@app.command("status")
def status(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Show whether the embedded Valkey server runs, its pid, socket, version, uptime and memory.

    Exits 1 when it is not running.
    """
    from slimyq import server

    settings = app_of(ctx).settings
    if settings.redis_url:
        render.note(f"note: a Redis URL is set, so slimyq uses {redact_url(settings.redis_url)}, not this server")
    state = server.status(settings)
    render.show(state, pick_format(fmt, as_json))
    if not state.running:
        raise typer.Exit(1)


@app.command("stop")
def stop(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Stop the embedded Valkey server, flushing its append-only file first.

    Its data stays in the data dir for the next start. Not running is not an error (exit 0).
    """
    from slimyq import server

    settings = app_of(ctx).settings
    fmt = pick_format(fmt, as_json)
    before = server.status(settings)
    was_running = server.stop(settings)
    if fmt is not Format.table:
        render.show({"was_running": was_running, "pid": before.pid, "socket": before.socket}, fmt)
    elif was_running:
        render.line(f"embedded valkey stopped (pid {before.pid})" if before.pid else "embedded valkey stopped")
    else:
        render.line("embedded valkey is not running")
