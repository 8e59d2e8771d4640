"""`slimyq config show`: every effective setting, its value and where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.render import Format

if TYPE_CHECKING:
    from slimyq.config import LoadedSettings

app = typer.Typer(help=GROUP_HELP["config"], no_args_is_help=True, add_completion=False)


@dataclass(frozen=True)
class ConfigEntry:
    key: str
    value: Any  # secrets masked, URL passwords redacted
    source: str  # default | file PATH | env NAME | .env NAME | flag
    effective: str | None = None  # what an empty value means here, if anything


def entries(loaded: LoadedSettings) -> list[ConfigEntry]:
    """One redacted entry per setting, in the order of config.example.toml."""
    from slimyq.config import flat_values, shown_value

    settings = loaded.settings
    derived: dict[str, str] = {}
    if not settings.redis_url:
        derived["redis_url"] = f"embedded Valkey at {settings.valkey_socket}"
    if not settings.database_url:
        derived["database_url"] = f"SQLite file {settings.effective_database_url}"
    if not settings.chat.api_key:
        derived["chat.api_key"] = "not set: the chat queue runs in fallback mode"
    return [
        ConfigEntry(key, shown_value(key, value), loaded.sources.get(key, "default"), derived.get(key))
        for key, value in flat_values(settings).items()
    ]


def _cell(entry: ConfigEntry) -> str:
    if entry.effective:
        return f"({entry.effective})"
    if isinstance(entry.value, bool):
        return "true" if entry.value else "false"
    return str(entry.value)


@app.command()
def show(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Print every effective setting, its value and its source.

    Sources: default, file PATH, env NAME, .env NAME, flag.
    API keys show as *** and URL passwords are redacted.

    Empty values that mean something (embedded Valkey, SQLite file, chat fallback mode) get a note saying what
    is used instead: in parentheses in the table, as "effective" in the other formats.

    --json prints one object keyed by setting name, for scripts, e.g.
    slimyq config show --json | jq -r '."queues.chat.concurrency".value'

    Each entry is {"value": ..., "source": "...", "effective": null or "..."}.

    --format ndjson and csv print one record per setting: key, value, source, effective.
    """
    found = entries(app_of(ctx).loaded)
    fmt = pick_format(fmt, as_json)
    if fmt is Format.json:
        render.show({e.key: {k: v for k, v in asdict(e).items() if k != "key"} for e in found}, fmt)
    elif fmt is Format.table:
        rows = [{"key": e.key, "value": _cell(e), "source": e.source} for e in found]
        render.show(rows, fmt, columns=["key", "value", "source"])
    else:
        render.show(found, fmt)
