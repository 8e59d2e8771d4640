"""The only module that imports Rich: turns plain data into tables, JSON, NDJSON or CSV.

Commands hand over dataclasses, dicts or lists of them. Tables are for people (Rich boxes on a
terminal; plain space-aligned columns that never wrap a field in a pipe); JSON keys are
snake_case; ``ndjson`` and ``csv`` print one record a line for scripts. Everything long shows
progress on a terminal (stderr) and nothing extra without one, so cron stays quiet.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import enum
import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Rich is imported on first output, not at start-up
    from rich.console import Console
    from rich.table import Table


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


_out: Console | None = None
_err: Console | None = None


def out() -> Console:
    from rich.console import Console

    global _out
    if _out is None or _out.file is not sys.stdout:
        _out = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    return _out


def err() -> Console:
    from rich.console import Console

    global _err
    if _err is None or _err.file is not sys.stderr:
        _err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    return _err


def is_tty() -> bool:
    return sys.stderr.isatty()


# ---------------------------------------------------------------- plain data


def jsonable(obj: Any) -> Any:
    """Dataclasses, datetimes, enums and paths to JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    if isinstance(obj, dt.date):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return obj


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1e6 else f"{value:.3g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(jsonable(value), ensure_ascii=False)
    return str(jsonable(value))


def _rows(data: Any) -> list[dict[str, Any]]:
    plain = jsonable(data)
    if isinstance(plain, list):
        return [r if isinstance(r, dict) else {"value": r} for r in plain]
    if isinstance(plain, dict):
        return [plain]
    return [{"value": plain}]


# ---------------------------------------------------------------- output


def show(
    data: Any,
    fmt: Format | str = Format.table,
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    empty: str = "nothing to show",
    record: type | None = None,
) -> None:
    """Print records (a list) or one record (a mapping or dataclass) in the chosen format.

    ``record`` is the dataclass of the records: an empty list still gets its CSV header from it.
    """
    fmt = Format(fmt)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(jsonable(data), ensure_ascii=False, indent=2) + "\n")
        return
    rows = _rows(data)
    if fmt is Format.ndjson:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    cols = list(columns) if columns else _columns(rows)
    if not cols and record is not None and dataclasses.is_dataclass(record):
        cols = field_names(record)
    if fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if cols:
            writer.writerow(cols)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _csv_cell(row.get(c)) for c in cols])
        sys.stdout.write(buf.getvalue())
        return
    if not sys.stdout.isatty():
        _plain(data, rows, cols, title=title, empty=empty)
        return
    if isinstance(jsonable(data), dict):
        out().print(kv_table(rows[0], title=title))
        return
    if not rows:
        out().print(empty)
        return
    out().print(table(rows, cols, title=title))


def _plain(data: Any, rows: list[dict[str, Any]], cols: list[str], *, title: str | None, empty: str) -> None:
    """A table without a terminal: plain columns, one record a line, never wrapped or cut (for grep, awk).

    Columns are separated by two spaces and padded to their widest cell; headers keep their
    snake_case names (one word each); a cell's own line breaks are written as ``\\n``. One record
    (a mapping) prints as ``key  value`` lines.
    """
    if isinstance(jsonable(data), dict):
        grid = [[k, _cell(v)] for k, v in rows[0].items()]
    elif not rows:
        line(empty)
        return
    else:
        grid = [list(cols), *([_cell(row.get(c)) for c in cols] for row in rows)]
    grid = [[cell.replace("\r", "\\r").replace("\n", "\\n") for cell in r] for r in grid]
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))] if grid else []
    text = [title] if title else []
    text += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in grid]
    sys.stdout.write("\n".join(text) + "\n")


def show_sections(
    sections: Mapping[str, Any], fmt: Format | str = Format.table, *, columns: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Several named tables (a report); JSON is one object keyed by section.

    CSV is one table: a ``section`` column, then the union of the sections' ``columns`` (each
    section's record fields), so the header is the same whatever rows there are.
    """
    fmt = Format(fmt)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(jsonable(sections), ensure_ascii=False, indent=2) + "\n")
        return
    if fmt in (Format.ndjson, Format.csv):
        flat: list[dict[str, Any]] = []
        for name, data in sections.items():
            flat.extend({"section": name, **row} for row in _rows(data))
        fixed = {"section": None} | {c: None for name in sections for c in (columns or {}).get(name, ())}
        show(flat, fmt, columns=_columns([fixed, *flat]))
        return
    for index, (name, data) in enumerate(sections.items()):
        if index:
            line()
        title = name.replace("_", " ")
        show(data, fmt, title=title, empty=f"{title}: none")


def _csv_cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_names(record: type) -> list[str]:
    """The fields of a dataclass of records, in order: the columns of its table."""
    return [f.name for f in dataclasses.fields(record)]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(key, None)
    return list(cols)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, title: str | None = None) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        t.add_column(col.replace("_", " "), overflow="fold")
    for row in rows:
        t.add_row(*(_cell(row.get(c)) for c in columns))
    return t


def kv_table(row: Mapping[str, Any], *, title: str | None = None) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    for key, value in row.items():
        t.add_row(key.replace("_", " "), _cell(value))
    return t


def line(text: str = "") -> None:
    """Plain text to stdout (no markup, no wrapping)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def summary(text: str, verbose: bool = False) -> None:
    """A success summary for a person: stdout on a terminal or with ``-v``; nothing in cron or a pipe.

    The rule for commands meant for cron and scripts: silent on success without a terminal,
    errors one line on stderr, the exit code tells the outcome.
    """
    if verbose or sys.stdout.isatty():
        line(text)


def note(text: str) -> None:
    """Informational text for a person: stderr, only on a terminal."""
    if is_tty():
        err().print(text, markup=False)


def warn(text: str) -> None:
    sys.stderr.write(f"warning: {text}\n")


def error(message: str) -> None:
    """One line (or one per problem) on stderr."""
    for msg_line in message.splitlines() or [""]:
        sys.stderr.write(f"error: {msg_line}\n")
    sys.stderr.flush()


def confirm(question: str) -> bool:
    import typer

    return bool(typer.confirm(question, default=False, err=True))


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``. A progress bar on a terminal; silent otherwise."""
    if not is_tty():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def live(read: Callable[[], Any], fmt: Format | str, *, interval: float = 2.0, title: str | None = None) -> None:
    """Refresh a table in place until Ctrl-C. Without a terminal, or not as a table, print once."""
    fmt = Format(fmt)
    if fmt is not Format.table or not sys.stdout.isatty():
        show(read(), fmt, title=title)
        return
    from rich.live import Live

    def build() -> Table:
        rows = _rows(read())
        return table(rows, _columns(rows), title=title)

    try:
        with Live(build(), console=out(), refresh_per_second=4) as view:
            while True:
                time.sleep(interval)
                view.update(build())
    except KeyboardInterrupt:
        return
