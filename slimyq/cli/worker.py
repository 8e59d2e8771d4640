"""`slimyq worker`: run workers for one or more queues under one supervisor."""

from __future__ import annotations

from typing import Annotated

import typer

from slimyq.cli._options import app_of
from slimyq.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        ctx: typer.Context,
        queues: Annotated[
            list[str] | None, typer.Argument(metavar="QUEUE", help="Queues to serve (default: every configured queue).")
        ] = None,
        concurrency: Annotated[
            int | None, typer.Option("--concurrency", "-n", min=1, max=500,
                                     help="Jobs in flight at once per queue (default: each queue's config).")
        ] = None,
        burst: Annotated[bool, typer.Option("--burst", help="Exit when the queues are empty.")] = False,
        max_jobs: Annotated[
            int | None, typer.Option("--max-jobs", min=1, help="Each worker process exits after N jobs.")
        ] = None,
        processes: Annotated[
            int | None, typer.Option("--processes", "-p", min=1, max=64,
                                     help="Worker processes per queue sharing its concurrency (default: config).")
        ] = None,
        fork: Annotated[bool, typer.Option("--fork", help="Run each job in its own forked process.")] = False,
        log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
        log_format: Annotated[
            str | None, typer.Option("--log-format", metavar="text|json|auto",
                                     help="Log lines as text or JSON (as the root option; this one wins).")
        ] = None,
    ) -> None:
        """Start workers: each queue at its configured concurrency, one supervisor for all.

        SIGTERM or Ctrl-C lets running jobs finish (worker.shutdown_grace) and puts the rest back;
        a second signal stops at once and puts running jobs back on their queues.
        """
        import logging
        import os

        from slimyq import logs
        from slimyq.runtime.supervisor import Supervisor

        app_ = app_of(ctx)
        settings = app_.settings
        names = list(dict.fromkeys(queues or settings.queue_names))
        for name in names:
            if name not in settings.queues:
                raise UsageError(f"unknown queue {name!r}; known queues: {', '.join(settings.queue_names)}")
        level = getattr(logging, log_level.upper(), None)
        if not isinstance(level, int):
            raise UsageError(f"--log-level: {log_level!r} is not one of debug, info, warning, error")
        if log_format is not None and log_format not in logs.FORMATS:
            raise UsageError(f"--log-format: {log_format!r} is not one of {', '.join(logs.FORMATS)}")
        logs.setup(log_format or settings.log_format, level)  # --log-format / log_format / SLIMYQ_LOG_FORMAT
        plan = {name: (concurrency or settings.queue(name).concurrency, processes or settings.queue(name).processes)
                for name in names}
        code = Supervisor(settings, plan, burst=burst, max_jobs=max_jobs, fork=fork).run()
        logs.event(logging.getLogger("slimyq.supervisor"), logging.INFO, "supervisor.stop", "workers stopped",
                   pid=os.getpid(), exit_code=code)
        raise typer.Exit(code)
