"""Where errors meet the user: a click group that turns domain errors into one line and an exit code.

Putting it in the group (not only in ``main``) means Typer's ``CliRunner`` in tests sees exactly
what a user sees.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from slimyq.errors import SlimyqError

# Command groups built only when invoked: `enqueue` generates one subcommand per job type from the
# pydantic payload models, which would cost `slimyq --help` ~60 ms. The root holds a stub with the
# same name and help; resolving the name swaps in the real group.
LAZY_GROUPS: dict[str, str] = {"enqueue": "slimyq.cli.enqueue"}


def load_lazy(name: str) -> Any:
    import importlib

    import typer.main

    module = importlib.import_module(LAZY_GROUPS[name])
    return typer.main.get_command(module.build())


def _debug(ctx: Any) -> bool:
    obj = ctx.obj
    return bool(getattr(obj, "debug", False))


class SlimyqGroup(TyperGroup):
    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name in LAZY_GROUPS and not getattr(cmd, "_slimyq_real", False):
            cmd = load_lazy(name)
            cmd._slimyq_real = True
            self.commands[name] = cmd
        return name, cmd, rest

    def invoke(self, ctx: Any) -> Any:
        from slimyq import render

        try:
            return super().invoke(ctx)
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


def translate(exc: BaseException) -> SlimyqError | None:
    """Connection errors from redis-py or peewee that escaped the layers below."""
    from slimyq.errors import Unreachable
    from slimyq.redact import redact_text

    name = type(exc).__name__
    mod = type(exc).__module__ or ""
    if mod.startswith("redis") and ("Connection" in name or "Timeout" in name):
        return Unreachable(redact_text(f"lost the connection to Redis ({exc}); check that it is running"))
    if mod.startswith("peewee") and name in {"OperationalError", "InterfaceError"}:
        return Unreachable(redact_text(f"database error: {exc}; check that the database is reachable"))
    return None
