"""Options shared by several commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from slimyq.errors import SlimyqError
from slimyq.render import Format

if TYPE_CHECKING:
    from slimyq.app import App


FormatOption = Annotated[
    Format, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Short for --format json.")]


def pick_format(fmt: Format, as_json: bool) -> Format:
    return Format.json if as_json else fmt


def app_of(ctx: typer.Context) -> App:
    from slimyq.app import App

    obj = ctx.find_root().obj
    if not isinstance(obj, App):  # a sub-app invoked on its own (tests)
        obj = App()
        ctx.find_root().obj = obj
    return obj


def not_yet(command: str) -> SlimyqError:
    return SlimyqError(f"`slimyq {command}` is not available yet in this version")
