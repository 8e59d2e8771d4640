"""`slimyq db migrate|status`: apply and inspect the numbered schema migrations."""

from __future__ import annotations

import typer

from slimyq import render
from slimyq.cli._group import GROUP_HELP
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.errors import SlimyqError
from slimyq.redact import redact_url
from slimyq.render import Format

app = typer.Typer(help=GROUP_HELP["db"], no_args_is_help=True, add_completion=False)


@app.command("migrate")
def migrate(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """Apply pending schema migrations (safe to run from several hosts at once)."""
    from slimyq import db

    settings = app_of(ctx).settings
    fmt = pick_format(fmt, as_json)
    database = db.connect_settings(settings)
    try:
        applied = db.migrate(database)
    finally:
        database.close()
    if fmt is Format.json:
        render.show({"database": redact_url(settings.effective_database_url), "applied": applied}, fmt)
    elif fmt is not Format.table:
        render.show([{"migration": name} for name in applied], fmt, columns=["migration"])
    elif applied:
        for name in applied:
            render.line(f"applied {name}")
    else:
        render.line("database is up to date")


@app.command("status")
def status(ctx: typer.Context, fmt: FormatOption = Format.table, as_json: JsonFlag = False) -> None:
    """List the schema migrations and whether each is applied (exit 1 while any is pending)."""
    from slimyq import db
    from slimyq.db.mysql import require_exact_text

    settings = app_of(ctx).settings
    fmt = pick_format(fmt, as_json)
    database = db.connect_settings(settings)
    inexact: SlimyqError | None = None
    try:
        rows = [{"migration": name, "applied": done} for name, done in db.migration_status(database)]
        if all(row["applied"] for row in rows):
            try:
                require_exact_text(database, [*db.table_names(), db.HISTORY_TABLE])
            except SlimyqError as exc:  # MySQL tables in an inexact collation: report after the table
                inexact = exc
    finally:
        database.close()
    render.show(rows, fmt, columns=["migration", "applied"], empty="no migrations")
    pending = sum(1 for row in rows if not row["applied"])
    if pending:  # exit 1, so `slimyq db status` can gate a deploy
        plural = "s" if pending != 1 else ""
        raise SlimyqError(f"{pending} migration{plural} pending; run `slimyq db migrate`")
    if inexact is not None:
        raise inexact
