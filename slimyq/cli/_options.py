"""Options shared by several commands."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from slimyq.errors import SlimyqError, UsageError
from slimyq.render import Format

if TYPE_CHECKING:
    from slimyq.app import App


# What a time value looks like, in help: `--max-age 10m`, `--since 24h` or `--since 2024-05-01`.
DURATION = "DURATION"
SINCE = "DURATION|DATE"
DATE = "DATE"

FormatOption = Annotated[
    Format, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Short for --format json.")]
VerboseFlag = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print the summary even without a terminal (cron stays quiet).")
]


def pick_format(fmt: Format, as_json: bool) -> Format:
    return Format.json if as_json else fmt


def root_app(ctx: typer.Context) -> App:
    """The root command's :class:`App`, built once from the root options (``--config``, URLs,
    ``--debug``) whichever asks first: the root callback, or the lazy ``enqueue`` group, which
    needs the ``jobs`` setting to list a team's job types."""
    from slimyq.app import App

    root = ctx.find_root()
    if isinstance(root.obj, App):
        return root.obj
    p = root.params
    overrides = {"redis_url": p.get("redis_url"), "database_url": p.get("database_url"), "data_dir": p.get("data_dir"),
                 "log_format": p.get("log_format")}
    app = App(config_file=p.get("config"), overrides=overrides, debug=bool(p.get("debug")))
    root.obj = app
    return app


def app_of(ctx: typer.Context) -> App:
    from slimyq.app import App

    obj = ctx.find_root().obj
    if not isinstance(obj, App):  # a sub-app invoked on its own (tests)
        obj = App()
        ctx.find_root().obj = obj
    return obj


def not_yet(command: str) -> SlimyqError:
    return SlimyqError(f"`slimyq {command}` is not available yet in this version")


T = TypeVar("T")


def parsed(option: str, text: str, parse: Callable[[str], T]) -> T:
    """``parse(text)``; its ValueError becomes a usage error naming the option (exit 2)."""
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def since_option(text: str | None, option: str = "--since") -> dt.datetime | None:
    """``7d``/``24h`` back from now, or an ISO date/time; None when not given."""
    if text is None:
        return None
    from slimyq.timeparse import parse_since

    return parsed(option, text, parse_since)
