"""`slimyq enqueue`: one subcommand per registered job type, and ``--file`` for bulk JSONL.

The subcommands are generated from the job registry when this module is imported, from pydantic
models only (no rq, peewee or openai), so ``slimyq --help`` stays fast. Field options and their
validation live in :mod:`slimyq.cli._fields`; bulk files in :mod:`slimyq.bulk`. Everything is
validated before Redis is touched: a bad value exits 2 with one ``error: --option: problem`` line
per bad field and nothing is enqueued.
"""

from __future__ import annotations

import inspect
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from slimyq import render
from slimyq.cli._fields import FieldSpec, build_payload, field_specs
from slimyq.cli._options import FormatOption, JsonFlag, app_of, pick_format
from slimyq.cli._when import run_at
from slimyq.errors import Interrupted, SlimyqError, UsageError, ValidationFailed
from slimyq.jobs import registry
from slimyq.jobs.registry import ANY_QUEUE, JobType
from slimyq.render import Format
from slimyq.text import count

if TYPE_CHECKING:
    from slimyq.app import App
    from slimyq.bulk import BulkStopped
    from slimyq.client import Client
    from slimyq.producer import Enqueued

BULK_HELP = (
    "Put jobs on their queues: `slimyq enqueue JOB-TYPE --option value ...`, or many at once from a "
    "JSONL file with --file.\n\n"
    'Bulk lines look like {"type": "create_conversation", "payload": {...}, "jobId": "...", "queue": "..."} '
    "(jobId and queue optional). Every line is validated first; any bad line is reported as "
    "`line N: field: problem` and nothing is enqueued (exit 2). With --skip-invalid the valid lines "
    "are enqueued, the bad ones reported as warnings, and the exit code is 0 (2 if no line is valid).\n\n"
    "Ctrl-C or SIGTERM while enqueueing finishes the chunk in flight and stops (exit 130), printing how "
    "many jobs are queued and the command that continues (--resume RUN:LINE); nothing is enqueued twice."
)

QueueOpt = Annotated[str | None, typer.Option("--queue", help="Queue for the canary (other types have their own).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the job id.")]


def build() -> typer.Typer:
    group = typer.Typer(name="enqueue", help=BULK_HELP, no_args_is_help=True, add_completion=False)
    group.callback(invoke_without_command=True)(_bulk)
    for jt in registry.all_types():
        group.command(jt.cli_name, help=jt.help, no_args_is_help=False)(_command_for(jt))
    return group


# ------------------------------------------------------------------ one job


def _command_for(jt: JobType) -> Any:
    """A Typer command function whose signature has one option per payload field."""
    specs = field_specs(jt)

    def command(ctx: typer.Context, **kw: Any) -> None:
        _enqueue_one(ctx, jt, specs, kw)

    opt = typer.Option
    params: list[tuple[str, Any, Any]] = []
    positional = next((s for s in specs if s.positional), None)
    if positional is not None:
        arg = typer.Argument(metavar=positional.name.upper(), help=positional.help, show_default=False)
        params.append(("argument", Annotated[str | None, arg], None))
    for spec in specs:
        info = opt(spec.option, help=spec.help, metavar=_metavar(jt, spec), show_default=False)
        params.append((spec.param, Annotated[str | None, info], None))
    queue_help = "The queue to run on (required)." if jt.queue == ANY_QUEUE else f"Always {jt.queue!r}."
    params += [
        ("queue", Annotated[str | None, opt("--queue", help=queue_help, metavar="QUEUE")], None),
        (
            "job_id",
            Annotated[str | None, opt("--job-id", metavar="ID", help="Job id; an existing id enqueues nothing.")],
            None,
        ),
        (
            "in_",
            Annotated[str | None, opt("--in", metavar="DELAY", help="Run after a delay: 30s, 10m, 1h30m, 2d.")],
            None,
        ),
        (
            "at",
            Annotated[str | None, opt("--at", metavar="TIME", help="Run at a time: ISO 8601 or HH:MM (UTC).")],
            None,
        ),
        (
            "wait",
            Annotated[bool, opt("--wait", help="Wait for the result and print it (exit 1 if the job fails).")],
            False,
        ),
        ("timeout", Annotated[float, opt("--timeout", metavar="S", help="Seconds --wait waits.")], 30.0),
        ("fmt", FormatOption, Format.table),
        ("as_json", JsonFlag, False),
        ("quiet", QuietOpt, False),
    ]
    kind = inspect.Parameter.KEYWORD_ONLY
    signature = [inspect.Parameter("ctx", kind, annotation=typer.Context)]
    signature += [inspect.Parameter(name, kind, annotation=ann, default=default) for name, ann, default in params]
    command.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in signature}
    command.__doc__ = jt.help
    command.__name__ = jt.name
    return command


def _metavar(jt: JobType, spec: FieldSpec) -> str:
    """What the value looks like: ``INTEGER``, ``NUMBER``, ``true|false``, ``a|b|c``, ``UUID``, ``JSON``, ``TEXT``."""
    if spec.kind != "text":
        return {"json": "JSON", "any": "JSON|TEXT"}[spec.kind]
    from typing import Literal, get_args, get_origin
    from uuid import UUID

    info = jt.payload.model_fields.get(spec.name)
    annotation = info.annotation if info is not None else str
    options = [a for a in (get_args(annotation) if get_origin(annotation) is not Literal else (annotation,))
               if a is not type(None)] or [annotation]
    ann = options[0]
    if get_origin(ann) is Literal:
        choices = "|".join(str(v) for v in get_args(ann))
        return choices if len(choices) <= 24 else "CHOICE"  # the help lists them: "one of ..."
    return {bool: "true|false", int: "INTEGER", float: "NUMBER", UUID: "UUID"}.get(ann, "TEXT")


def _enqueue_one(ctx: typer.Context, jt: JobType, specs: list[FieldSpec], kw: dict[str, Any]) -> None:
    from slimyq.producer import check_job_id

    app_ = app_of(ctx)
    fmt, quiet = _output(ctx, pick_format(kw["fmt"], kw["as_json"]), kw["quiet"])
    run_time, problems = run_at(kw["in_"], kw["at"])
    if kw["job_id"] is not None:
        try:
            check_job_id(kw["job_id"])
        except UsageError as exc:
            problems.append(str(exc))
    if kw["wait"] and not kw["timeout"] > 0:
        problems.append("--timeout: must be more than 0 seconds")
    settings = app_.settings
    try:
        registry.queue_for(jt, kw["queue"], settings.queue_names)
    except UsageError as exc:
        text = str(exc)
        problems.append(text if text.startswith("--queue") else f"--queue: {text}")
    payload = build_payload(jt, specs, kw, argument=kw.get("argument"), extra_problems=problems)

    client = app_.client  # the Python API's path: validated again there, enqueued by one script call
    done = client.enqueue(jt, payload, job_id=kw["job_id"], queue=kw["queue"], at=run_time)
    if done.status == "exists" and not quiet:
        render.warn(f"job {done.id} already exists; nothing was enqueued")
    if kw["wait"]:
        _wait(client, done, kw["timeout"], fmt, quiet)
    else:
        _report(done, fmt, quiet)


def _output(ctx: typer.Context, fmt: Format, quiet: bool) -> tuple[Format, bool]:
    """Output flags given before the job type (``slimyq enqueue --json canary ...``) count too."""
    before = ctx.meta.get("slimyq.enqueue.output")
    if before:
        group_fmt, group_quiet = before
        fmt = fmt if fmt is not Format.table else group_fmt
        quiet = quiet or group_quiet
    return fmt, quiet


def _record(done: Enqueued) -> dict[str, Any]:
    record: dict[str, Any] = {"id": done.id, "type": done.type, "queue": done.queue, "status": done.status}
    if done.scheduled_for is not None:
        record["scheduled_for"] = done.scheduled_for.isoformat().replace("+00:00", "Z")
    return record


def _report(done: Enqueued, fmt: Format, quiet: bool) -> None:
    if quiet or fmt is Format.table:
        render.line(done.id)
        if not quiet and done.status != "exists":
            when = f" for {_record(done)['scheduled_for']}" if done.scheduled_for else ""
            render.note(f"{done.status} {done.type} on {done.queue}{when}")
        return
    render.show(_record(done), fmt)


def _wait(client: Client, done: Enqueued, timeout: float, fmt: Format, quiet: bool) -> None:
    if not quiet:
        render.note(f"waiting up to {timeout:g} s for job {done.id} ...")
    result = client.wait(done.id, timeout)  # JobFailed, JobTimeout: exit 1 with their one line
    if quiet:
        render.line(done.id)
    else:
        render.show(result, fmt, empty="(empty result)")


# ------------------------------------------------------------------ bulk


def _bulk(
    ctx: typer.Context,
    file: Annotated[
        str | None, typer.Option("--file", metavar="PATH", help="JSONL file of jobs, one a line ('-' reads stdin).")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Enqueue the valid lines, report the bad ones (exit 0).")
    ] = False,
    queue: Annotated[str | None, typer.Option("--queue", metavar="QUEUE", help="Queue for lines without one.")] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", metavar="RUN:LINE", help="Continue a stopped bulk run from LINE with its run id "
                     "(the command to run is printed when a run stops); nothing is enqueued twice."),
    ] = None,
    fmt: FormatOption = Format.table,
    as_json: JsonFlag = False,
    quiet: QuietOpt = False,
) -> None:
    fmt = pick_format(fmt, as_json)
    if ctx.invoked_subcommand is not None:
        if file is not None or skip_invalid or queue is not None or resume is not None:
            raise UsageError(
                "--file, --skip-invalid, --queue and --resume go either with a job type or with --file, not both"
            )
        ctx.meta["slimyq.enqueue.output"] = (fmt, quiet)
        return
    if file is None:
        raise UsageError("give a job type (see slimyq enqueue --help) or --file PATH")
    from slimyq import bulk

    run, start = _resume_point(resume) if resume is not None else (bulk.new_run(), 1)
    job = BulkJob(file, skip_invalid, queue, run, start)
    app_ = app_of(ctx)
    if file == "-":
        with bulk.spooled(sys.stdin.buffer) as path:
            _run_bulk(app_, path, job, fmt, quiet)
    else:
        path = Path(file)
        if not path.is_file():
            raise UsageError(f"--file: {file} does not exist or is not a file")
        _run_bulk(app_, path, job, fmt, quiet)


@dataclass(frozen=True)
class BulkJob:
    name: str  # as given to --file ('-' for stdin)
    skip_invalid: bool
    queue: str | None
    run: str
    start: int

    @property
    def shown(self) -> str:
        return "stdin" if self.name == "-" else self.name

    def resume_command(self, line: int) -> str:
        parts = ["slimyq", "enqueue", "--file", shlex.quote(self.name)]
        parts += ["--queue", shlex.quote(self.queue)] if self.queue else []
        parts += ["--skip-invalid"] if self.skip_invalid else []
        again = " (with the same input on stdin)" if self.name == "-" else ""
        return " ".join([*parts, "--resume", f"{self.run}:{line}"]) + again


def _resume_point(text: str) -> tuple[str, int]:
    run, sep, line = text.partition(":")
    if not sep or not run or not line.isdigit() or int(line) < 1 or not all(c in "0123456789abcdef" for c in run):
        raise UsageError(f"--resume: {text!r} is not RUN:LINE (copy it from the message of the stopped run)")
    return run, int(line)


def _run_bulk(app_: App, path: Path, job: BulkJob, fmt: Format, quiet: bool) -> None:
    from slimyq import bulk

    if job.start > 1:
        lines = bulk.line_count(path)
        if job.start > lines:
            raise UsageError(f"--resume: line {job.start:,} is past the end of {job.shown} ({count(lines, 'line')}); "
                             "nothing was enqueued")
    settings = app_.settings
    parser = bulk.LineParser(settings.queue_names, default_queue=job.queue)
    try:
        with render.progress(f"checking {job.shown}") as advance:
            found = bulk.scan(path, parser, job.start)
            advance(found.lines)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while checking {job.shown}; nothing was enqueued") from None
    more = [f"... and {count(found.unreported, 'more invalid line')}"] if found.unreported else []
    problems = found.problems + more
    if found.invalid and not (job.skip_invalid and found.valid):
        what = "no line is valid" if job.skip_invalid else f"{found.invalid:,} of {count(found.lines, 'line')} " + (
            "is invalid" if found.invalid == 1 else "are invalid")
        raise ValidationFailed([*problems, f"{job.shown}: {what}; nothing was enqueued"])
    for problem in problems:
        render.warn(problem)
    conn = app_.redis
    from slimyq import ratelimit

    try:
        ratelimit.precheck(conn, settings, found.rate_counts)
    except ratelimit.UserRateLimited as exc:
        from slimyq.obs import ops

        ops.count_rejections(conn, found.rate_kinds.get(exc.user, {}))
        raise
    try:
        with bulk.StopFlag() as stop, render.progress("enqueueing", total=found.valid) as advance:
            result = bulk.enqueue_file(conn, settings, path, parser, run=job.run, start_line=job.start,
                                       advance=advance, stop=stop)
    except bulk.BulkStopped as stopped:
        raise _stopped(job, found.valid, stopped) from None
    if quiet:
        return
    if fmt is Format.table:
        extra = f", skipped {count(result.invalid, 'invalid line')}" if result.invalid else ""
        render.line(f"enqueued {count(result.enqueued, 'job')} ({result.existed:,} already existed){extra}")
    else:
        render.show({"enqueued": result.enqueued, "existed": result.existed, "invalid": result.invalid,
                     "lines": found.lines, "run": job.run}, fmt)


def _stopped(job: BulkJob, total: int, stopped: BulkStopped) -> SlimyqError:
    """The one-line message of a stopped bulk run: what is queued for sure, and the command that continues."""
    from slimyq.errors import translate

    done = stopped.result
    cont = f"continue with: {job.resume_command(done.next_line)}"
    sure = f"{done.done:,} of {count(total, 'job')} enqueued ({done.existed:,} already existed) through line " \
           f"{done.next_line - 1:,} of {job.shown}"
    if stopped.uncertain:
        lo, hi = stopped.uncertain
        sure += f"; lines {lo:,}-{hi:,} were being sent and may be queued (the command skips them if so)"
    cause = stopped.cause
    if cause is None or isinstance(cause, KeyboardInterrupt):
        return Interrupted(f"interrupted: {sure}; {cont}")
    known = cause if isinstance(cause, SlimyqError) else translate(cause)
    reason = str(known) if known is not None else f"{type(cause).__name__}: {cause}"
    stopped_error = SlimyqError(f"bulk enqueue stopped ({reason}): {sure}; {cont}")
    stopped_error.exit_code = known.exit_code if known is not None else 1  # e.g. 75 when rate limited
    return stopped_error
