"""Typer's coercion deferred until a value needs it (slimyq.cli._coerce): the same values, the
same errors, without building an adapter for None, a flag or a command's own default."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer._click.core import ParameterSource
from typer._coercion import build_runtime_param
from typer.testing import CliRunner

from slimyq.cli import app
from slimyq.cli._coerce import DeferredRuntimeParam, is_own_default
from slimyq.cli._group import LAZY_GROUPS, load_lazy
from slimyq.cli._prepare import prepare


def _commands(command: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def _every_command() -> Iterator[tuple[str, Any]]:
    yield from _commands(typer.main.get_command(app), "slimyq")
    for name in LAZY_GROUPS:
        yield from _commands(load_lazy(name), f"slimyq {name}")


def test_every_default_passed_through_is_what_typer_makes_of_it() -> None:
    """A default the deferred coercion returns unchanged is exactly what Typer's own adapter
    returns for it: the pass-through never hides a coercion or a bad default."""
    checked = 0
    for path, command in _every_command():
        ctx = command.make_context(path, [], resilient_parsing=True)
        for param in command.params:
            if not hasattr(param, "type_descriptor") or param.default is None:
                continue
            if not is_own_default(param, param.default, ParameterSource.DEFAULT):
                continue
            real = build_runtime_param(param.type_descriptor).coerce(param.default, param=param, ctx=ctx)
            assert real == param.default and type(real) is type(param.default), (path, param.name)
            checked += 1
    assert checked > 20  # formats, intervals, limits ... across the commands


def test_a_value_from_the_command_line_goes_through_typers_coercion(redis_url: str, tmp_path: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMYQ_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    bad = runner.invoke(app, ["stats", "--interval", "0.1"])
    assert bad.exit_code == 2 and "--interval" in bad.output and "0.2" in bad.output, bad.output
    typed = runner.invoke(app, ["stats", "--format", "JSON"])  # case-insensitive choice, as Typer coerces it
    assert typed.exit_code == 0 and typed.output.lstrip().startswith("["), typed.output
    limit = runner.invoke(app, ["jobs", "--limit", "x"])
    assert limit.exit_code == 2 and "--limit" in limit.output, limit.output


def test_defer_leaves_typers_cache_to_typer_once_built() -> None:
    """The first value that needs coercion builds Typer's runtime parameter and puts it in
    Typer's own cache: the stand-in is not consulted again."""
    command = typer.main.get_command(app).commands["jobs"]  # type: ignore[attr-defined]
    prepare(command)
    limit = next(p for p in command.params if p.name == "limit")
    assert isinstance(limit._runtime_param, DeferredRuntimeParam)
    ctx = command.make_context("jobs", ["--limit", "7"], resilient_parsing=True)
    assert ctx.params["limit"] == 7
    assert limit._runtime_param is not None and not isinstance(limit._runtime_param, DeferredRuntimeParam)
