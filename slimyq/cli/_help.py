"""Honest help: what a value looks like, not its Python type.

Typer 0.29 labels every parameter with its annotation (``<str>``, ``<list[str]>``, ``<bool>`` even
on flags, which take no value). These label values as people read them: ``TEXT``, ``INTEGER``,
``NUMBER``, ``PATH``, choices as ``table|json|...``, and nothing on a flag; ``_prepare`` applies
them to the built command tree once. An option's explicit ``metavar=`` is kept. Help paragraphs are
reflowed so the terminal, not the docstring's line breaks, decides where lines end.
"""

from __future__ import annotations

import datetime as dt
import inspect
from pathlib import Path
from typing import Any, get_args

LABELS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH", dt.datetime: "DATETIME"}


def _label(param: Any, ctx: Any) -> str | None:
    if getattr(param, "is_flag", False):
        return None
    desc = param.type_descriptor
    if desc.is_choice:
        return str(param.display_type(ctx)).strip("<>")
    annotation = desc.annotation
    if desc.is_list:
        annotation = (get_args(annotation) or (str,))[0]
    if desc.is_path:
        return "PATH"
    label = LABELS.get(annotation) or str(param.display_type(ctx)).strip("<>").upper()
    return f"{label}..." if desc.is_list or param.nargs != 1 else label


def reflow(text: str) -> str:
    """Docstring paragraphs as one line each (the terminal wraps them), so no line breaks mid-sentence.

    Paragraphs are separated by a blank line; a paragraph of ``- `` items keeps one item a line.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.splitlines()
        if any(line.lstrip().startswith(("- ", "\b")) for line in lines):
            out.append(para)
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def relabel_command(command: Any) -> None:
    """The command's help reflowed."""
    if getattr(command, "help", None):
        command.help = reflow(command.help)


def relabel(param: Any) -> None:
    """A parameter labelled by what its value looks like (an option's own ``metavar=`` is kept)."""
    is_argument = getattr(param, "param_type_name", "") == "argument"  # its metavar names it, not its type
    if (param.metavar is None or is_argument) and hasattr(param, "type_descriptor"):
        param.display_type_rich = lambda ctx, p=param: _label(p, ctx)


def relabel_help_option(option: Any) -> None:
    """--help is a flag too: no label."""
    option.display_type_rich = lambda ctx: None
