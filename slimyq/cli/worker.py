"""`slimyq worker`."""

from __future__ import annotations

import typer

from slimyq.cli._options import not_yet


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def _cmd() -> None:
        """(not available yet)"""
        raise not_yet("worker")
