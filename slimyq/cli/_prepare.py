"""One walk over a built command tree before Typer runs it, once per command: honest help labels
(``_help``) and deferred coercion (``_coerce``) for every parameter and for the --help option
click builds on demand; help paragraphs reflowed."""

from __future__ import annotations

from typing import Any

from slimyq.cli._coerce import defer_param
from slimyq.cli._help import relabel, relabel_command, relabel_help_option

_DONE = "_slimyq_prepared"


def prepare(command: Any) -> None:
    """Prepare ``command`` and its subcommands (each once)."""
    if getattr(command, _DONE, False):
        return
    setattr(command, _DONE, True)
    relabel_command(command)
    for param in getattr(command, "params", []):
        relabel(param)
        defer_param(param)
    original = command.get_help_option

    def help_option(ctx: Any) -> Any:  # click builds --help on demand, for each context
        option = original(ctx)
        if option is not None:
            relabel_help_option(option)
            defer_param(option)
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        prepare(sub)
