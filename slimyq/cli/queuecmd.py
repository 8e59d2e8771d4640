"""`slimyq queue ...`."""

from __future__ import annotations

import typer

from slimyq.cli._options import not_yet

app = typer.Typer(help="(not available yet)", no_args_is_help=True)


@app.command("status")
def _placeholder() -> None:
    """(not available yet)"""
    raise not_yet("queue")
