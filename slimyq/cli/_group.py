"""Where errors meet the user: a click group that turns domain errors into one line and an exit code.

Putting it in the group (not only in ``main``) means Typer's ``CliRunner`` in tests sees exactly
what a user sees.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup
from typer.exceptions import TyperException

from slimyq.errors import SlimyqError, translate

# Command groups built only when invoked: building a group's commands (and importing its module)
# costs every other command's start-up, and `enqueue` generates one subcommand per job type from
# the pydantic payload models (~60 ms). The root holds a stub with the same name and help
# (GROUP_HELP, the one place each group's help is written); resolving the name swaps in the real
# group: the module's ``app``, or what its ``build()`` returns.
LAZY_GROUPS: dict[str, str] = {
    "enqueue": "slimyq.cli.enqueue",
    "job": "slimyq.cli.jobcmd",
    "queue": "slimyq.cli.queuecmd",
    "audit": "slimyq.cli.audit",
    "history": "slimyq.cli.history",
    "ratelimit": "slimyq.cli.ratelimit",
    "server": "slimyq.cli.server",
    "db": "slimyq.cli.dbcmd",
    "config": "slimyq.cli.configcmd",
}
GROUP_HELP: dict[str, str] = {
    "enqueue": "Put jobs on their queues: `slimyq enqueue JOB-TYPE --option value ...`, or a JSONL file with --file.",
    "job": "One job: show, requeue, cancel, delete.",
    "queue": "Operate a queue: pause, resume, empty, prune.",
    "audit": "Audit log: cleanup, report, list.",
    "history": "Job history in the database: list, stats, prune.",
    "ratelimit": "Per-user rate limits: show, reset.",
    "server": "The embedded Valkey server: start, status, stop.",
    "db": "Database schema: migrate and status.",
    "config": "Show the effective configuration.",
}
NEEDS_JOB_TYPES = frozenset({"enqueue"})  # built from the registry: the `jobs` setting's modules first


def stub(name: str) -> typer.Typer:
    """The root's placeholder for a lazy group: its name and help, nothing to build."""
    group = typer.Typer(help=GROUP_HELP[name], no_args_is_help=True)
    group.callback()(lambda: None)
    return group


def load_lazy(name: str) -> Any:
    import importlib

    import typer.main

    module = importlib.import_module(LAZY_GROUPS[name])
    group = module.build() if hasattr(module, "build") else module.app
    return typer.main.get_group(group)  # a group even with one command, as when added with add_typer


def _debug(ctx: Any) -> bool:
    obj = ctx.obj
    return bool(getattr(obj, "debug", False))


class SlimyqGroup(TyperGroup):
    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        """Typer's own usage errors (a bad flag, a missing option, an unknown command) become the same
        one-line ``error: ...`` as every other error, exit 2, instead of Typer's boxed panel."""
        from slimyq.cli._prepare import prepare

        prepare(self)  # honest help labels; Typer's pydantic coercion only for values that need it
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except ClickException as exc:
            from slimyq import render

            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                render.error(usage_message(exc))
            sys.exit(exc.exit_code)
        except typer.Abort:
            from slimyq import render

            render.error("aborted; nothing was done")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name in LAZY_GROUPS and not getattr(cmd, "_slimyq_real", False):
            from slimyq.cli._prepare import prepare

            try:
                if name in NEEDS_JOB_TYPES:
                    from slimyq.cli._options import root_app

                    root_app(ctx).settings  # noqa: B018 - registers the `jobs` setting's modules: their types get commands
                cmd = load_lazy(name)
            except SlimyqError:
                if not ctx.resilient_parsing:
                    raise
                return name, cmd, rest  # shell completion: no completions rather than a traceback
            cmd._slimyq_real = True
            prepare(cmd)
            self.commands[name] = cmd
        return name, cmd, rest

    def invoke(self, ctx: Any) -> Any:
        from slimyq import render

        try:
            super().invoke(ctx)
            return None  # a command's return value is not an exit code (main() reads ints as exit codes)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except BrokenPipeError:
            raise typer.Exit(0) from None
        except SlimyqError as exc:
            if _debug(ctx):
                raise
            render.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            render.error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            translated = translate(exc)
            if translated is None:
                render.error(
                    f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
                )
                raise typer.Exit(1) from None
            render.error(str(translated))
            raise typer.Exit(translated.exit_code) from None


def usage_message(exc: ClickException) -> str:
    """Click's message on one line, naming the option and how to get help (``see slimyq X --help``)."""
    message = " ".join(exc.format_message().split())
    message = re.sub(r"^Invalid value for '([^']+)'(?: / '[^']+')*: (?:Value error, )?", r"\1: ", message).rstrip(".")
    extra = re.match(r"Got unexpected extra argument\S* \(([^ )]+)", message)
    if extra and extra.group(1).lower() in {"true", "false", "yes", "no", "on", "off", "1", "0"}:
        message += " (flags such as --json take no value)"
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    command = ctx.command
    if message.startswith("No such command") and hasattr(command, "list_commands"):
        names = [n for n in command.list_commands(ctx) if not getattr(command.get_command(ctx, n), "hidden", False)]
        if names:
            message += f" (one of: {', '.join(names)})"
    return f"{message}; see `{ctx.command_path} --help`"
