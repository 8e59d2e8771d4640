"""`slimyq ratelimit show|reset USER`: a user's per-window count for rate-limited jobs (chat)."""

from __future__ import annotations

from typing import Annotated

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.render import Format

app = typer.Typer(help=GROUP_HELP["ratelimit"], no_args_is_help=True, add_completion=False)

UserArg = Annotated[str, typer.Argument(help="The user id (userId of the jobs).", show_default=False)]


@app.command("show")
def show(ctx: typer.Context, user: UserArg, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Show how many rate-limited requests USER made in the current window, and when it resets."""
    from slimyq import ratelimit

    app_ = app_of(ctx)
    status = ratelimit.show(app_.redis, app_.settings, user)
    render.show(status, pick_format(fmt, as_json))


@app.command("reset")
def reset(ctx: typer.Context, user: UserArg, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Forget USER's current window: their next request starts a fresh one."""
    from slimyq import ratelimit

    app_ = app_of(ctx)
    had_window = ratelimit.reset(app_.redis, app_.settings, user)
    fmt = pick_format(fmt, as_json)
    if fmt is Format.table:
        render.line(f"rate limit reset for {user}" if had_window else f"{user} had no open rate-limit window")
    else:
        render.show({"user": user, "reset": had_window}, fmt)
