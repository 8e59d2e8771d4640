"""`slimyq stats`, `slimyq workers`, `slimyq jobs`, `slimyq check`."""

from __future__ import annotations

import typer

from slimyq.cli._options import not_yet


def register(app: typer.Typer) -> None:
    for name in ("stats", "workers", "jobs", "check"):

        def _cmd(name: str = name) -> None:
            raise not_yet(name)

        app.command(name, help="(not available yet)")(_cmd)
