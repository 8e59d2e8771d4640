"""`slimyq metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slimyq import render
from slimyq.cli._options import app_of
from slimyq.render import Format


def register(app: typer.Typer) -> None:
    @app.command("metrics")
    def metrics(
        ctx: typer.Context,
        queues: Annotated[list[str] | None, typer.Argument(metavar="QUEUE", help="Queues (default: all).")] = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write to FILE atomically (node_exporter textfile).")
        ] = None,
        fmt: Annotated[
            Format | None,
            typer.Option("--format", "-f", case_sensitive=False,
                         help="Samples as table/json/ndjson/csv instead of the Prometheus text format."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Short for --format json.")] = False,
    ) -> None:
        """Print queue depths, job counters and duration histograms in the Prometheus text format."""
        from slimyq.cli.inspect_cmds import _queues
        from slimyq.inspect import prom

        app_ = app_of(ctx)
        names = _queues(app_.settings, queues)
        if as_json:
            fmt = Format.json
        if fmt is not None:
            render.show(prom.samples(app_.redis, app_.settings, names), fmt, columns=["name", "labels", "value"])
            return
        if output is not None:
            prom.write_textfile(app_.redis, app_.settings, output, names)
            render.note(f"wrote {output}")
            return
        render.line(prom.exposition(app_.redis, app_.settings, names).rstrip("\n"))
