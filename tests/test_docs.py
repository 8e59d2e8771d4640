"""Every command has help text and appears in the README; the README starts with two commands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from slimyq.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    from slimyq.cli._group import LAZY_GROUPS, load_lazy

    root = typer.main.get_command(app)
    out = []
    for path, cmd in _walk(root):
        if len(path) == 1 and path[0] in LAZY_GROUPS:
            out += [((path[0], *p), c) for p, c in _walk(load_lazy(path[0]))]
        elif path and path[0] not in LAZY_GROUPS:
            out.append((path, cmd))
    return out


def test_every_command_has_help() -> None:
    missing = [" ".join(p) for p, c in _commands() if not (c.help or c.short_help or "").strip()]
    assert not missing, f"commands without help text: {missing}"
    placeholders = [" ".join(p) for p, c in _commands() if "not available yet" in (c.help or "")]
    assert not placeholders, f"commands still placeholders: {placeholders}"


def test_every_command_is_in_the_readme() -> None:
    lines = [line for line in README.splitlines() if "slimyq " in line or "`" in line]
    missing = []
    for path, _cmd in _commands():
        if path[0] == "enqueue" and len(path) > 1:
            # job types are listed in the README's job-type table
            if f"`{path[1]}`" not in README:
                missing.append(" ".join(path))
            continue
        head, *rest = path
        pattern = re.compile(rf"slimyq {re.escape(head)}\b" + "".join(rf".*\b{re.escape(w)}\b" for w in rest))
        if not any(pattern.search(line) for line in lines):
            missing.append(" ".join(path))
    assert not missing, f"commands missing from README.md: {missing}"


def test_readme_starts_with_two_setup_commands() -> None:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None and README.index("```bash") < README.index("\n## ")
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert "pip install -e ." in commands[0] and "scripts/tour.py" in commands[0]
    assert "pip install -e '.[test]'" in commands[1] and commands[1].rstrip().endswith("pytest")
