"""The slimyq command line. Errors meet the user here, and only here.

Every command group lives in its own module and imports its heavy dependencies (rq, peewee,
openai) inside the command body, so ``slimyq --help`` starts fast; the groups (``job``, ``audit``,
``enqueue`` ...) are imported and built only when invoked (``cli._group.LAZY_GROUPS``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from slimyq.cli import inspect_cmds, metrics, worker
from slimyq.cli._group import SlimyqGroup, stub

app = typer.Typer(
    cls=SlimyqGroup,
    name="slimyq",
    help="Run and inspect job queues: workers, enqueue, stats, jobs and audit log maintenance.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion, here only
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"slimyq {version('slimyq')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", metavar="PATH",
                     help="Config file (default: $SLIMYQ_CONFIG, ./slimyq.toml, XDG config dir)."),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", metavar="URL", help="Redis URL (overrides REDIS_URL).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", metavar="URL", help="Database URL (overrides DATABASE_URL).")
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option("--data-dir", metavar="PATH", help="Where the embedded server and SQLite file live."),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", metavar="text|json|auto",
                     help="Log lines as text or JSON (default: $SLIMYQ_LOG_FORMAT, config, auto = text on a "
                          "terminal or journald, else JSON)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
) -> None:
    import os

    from slimyq.cli._options import root_app

    if os.environ.get("SLIMYQ_TRACING"):  # OpenTelemetry only when asked for
        from slimyq.obs import trace

        trace.configure()
    root_app(ctx)  # built from these options (config, URLs, data_dir, log_format, debug)


worker.register(app)
app.add_typer(stub("enqueue"), name="enqueue")  # each group is built on first use: cli._group.LAZY_GROUPS
inspect_cmds.register(app)
for _name in ("job", "queue", "audit", "history"):
    app.add_typer(stub(_name), name=_name)
metrics.register(app)
for _name in ("ratelimit", "server", "db", "config"):
    app.add_typer(stub(_name), name=_name)


def main() -> None:
    """Console entry point (``slimyq`` and ``python -m slimyq``)."""
    from slimyq import _skip_otel, _startup

    _skip_otel.install()  # redis-py's unused import of OpenTelemetry's metrics SDK skipped (this process only)
    _startup.begin()  # start-up's objects out of the collector's way (this process only)
    app(prog_name="slimyq")
