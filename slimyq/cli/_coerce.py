"""Typer's value coercion built when there is a value to coerce, not for every parameter.

Typer 0.29 coerces each parameter's value through a pydantic ``TypeAdapter`` that it builds on
the parameter's first use, and it uses each parameter once per command: for ``slimyq stats
--json`` that was 13 adapters (and importing pydantic's validation machinery for them), although
nine values were None (an option not given, which Typer returns as None or ``()`` without asking
the adapter) and the others were booleans or the command's own defaults. :func:`defer_param` gives
each parameter a stand-in that handles None as Typer does, passes a default through unchanged
when it is the declared default object of the declared type (tests run every default through
Typer's adapters and get the same value back), and otherwise builds Typer's own coercion, keeps
it, and coerces with it: any value given on the command line or from the environment goes
through Typer exactly as before, errors and all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typer._click.core import ParameterSource
from typer._coercion import RuntimeParam, build_runtime_param


@dataclass(frozen=True)
class DeferredRuntimeParam(RuntimeParam):
    """Typer's ``RuntimeParam`` contract; the real one is built on the first value that needs it."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if is_own_default(param, value, ctx.get_parameter_source(param.name)):
            return value
        real = build_runtime_param(param.type_descriptor)
        param._runtime_param = real  # Typer's cache: from now on the parameter coerces as Typer does
        return real._coerce_value(value, param=param, ctx=ctx)


def is_own_default(param: Any, value: Any, source: ParameterSource | None) -> bool:
    """The parameter's declared default, unchanged: that object itself, of the declared type exactly."""
    annotation = param.type_descriptor.annotation
    return (source is ParameterSource.DEFAULT and value is param.default and isinstance(annotation, type)
            and type(value) is annotation)


def defer_param(param: Any) -> None:
    """Give the parameter the deferred coercion (unless Typer has built its own already)."""
    if hasattr(param, "type_descriptor") and getattr(param, "_runtime_param", False) is None:
        desc = param.type_descriptor
        param._runtime_param = DeferredRuntimeParam(parameter_info=desc.parameter_info, annotation=desc.annotation)
