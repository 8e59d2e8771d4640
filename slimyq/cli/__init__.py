"""The slimyq command line. Errors meet the user here, and only here.

Every command group lives in its own module and imports its heavy dependencies (rq, peewee,
openai) inside the command body, so ``slimyq --help`` starts fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from slimyq.cli import (
    audit,
    configcmd,
    dbcmd,
    history,
    inspect_cmds,
    jobcmd,
    metrics,
    queuecmd,
    ratelimit,
    server,
    worker,
)
from slimyq.cli._group import SlimyqGroup

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
_enqueue_stub = typer.Typer(
    help="Put jobs on their queues: `slimyq enqueue JOB-TYPE --option value ...`, or a JSONL file with --file.",
    no_args_is_help=True,
)
_enqueue_stub.callback()(lambda: None)
app.add_typer(_enqueue_stub, name="enqueue")  # the real group is built on first use: cli._group.LAZY_GROUPS
inspect_cmds.register(app)
app.add_typer(jobcmd.app, name="job")
app.add_typer(queuecmd.app, name="queue")
app.add_typer(audit.app, name="audit")
app.add_typer(history.app, name="history")
metrics.register(app)
app.add_typer(ratelimit.app, name="ratelimit")
app.add_typer(server.app, name="server")
app.add_typer(dbcmd.app, name="db")
app.add_typer(configcmd.app, name="config")


def main() -> None:
    """Console entry point (``slimyq`` and ``python -m slimyq``)."""
    app(prog_name="slimyq")
