"""Log output for every command and the worker: text lines, or one JSON object per line.

``--log-format``, the ``log_format`` config key or ``SLIMYQ_LOG_FORMAT`` pick ``text``, ``json`` or
``auto`` (the default): text on a terminal, text when stderr is the systemd journal (journald
stamps each line itself and ``journalctl`` is read by people), JSON anywhere else (containers,
files, pipes: what Loki, ELK and friends parse). A JSON line always has ``ts`` (UTC, ISO 8601),
``level``, ``event``, ``logger`` and ``msg``; events add their own fields (:func:`event`). Plain
library log calls (``log.warning(...)``) come out with ``event: "log"``.

Stdlib logging only: no new dependency, and the handler sits on the root logger, so warnings from
third-party code (httpx, rq) are JSON lines too instead of breaking a parser.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "text", "json"]
FORMATS: tuple[str, ...] = ("auto", "text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald adds the time and the process
_RESERVED = frozenset({"ts", "level", "event", "logger", "msg", "exc"})


def event(logger: logging.Logger, level: int, name: str, message: str, **fields: Any) -> None:
    """Log event ``name`` with its fields (``None`` values are left out)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"event": name, "fields": fields})


def fields_of(record: logging.LogRecord) -> Mapping[str, Any]:
    got = getattr(record, "fields", None)
    return got if isinstance(got, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is the ``exc`` string field)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            if value is not None and key not in _RESERVED:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with an event's fields appended as ``key=value``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields_of(record).items() if v is not None)
        return f"{line} {extra}" if extra else line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c.isspace() or c in "\"=" for c in text)) else text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it), like logging's lastResort."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


_HANDLER_FLAG = "_slimyq_handler"


def journald(stream: TextIO | None = None) -> bool:
    """stderr is the systemd journal: ``$JOURNAL_STREAM`` names its device and inode."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = wanted.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def resolve(fmt: str | None, stream: TextIO | None = None) -> Literal["text", "json", "journal"]:
    """``auto`` (or None) becomes text on a terminal or the journal, JSON elsewhere."""
    stream = stream or sys.stderr
    if fmt == "json":
        return "json"
    is_journal = journald(stream)
    if fmt == "text":
        return "journal" if is_journal else "text"
    try:
        tty = stream.isatty()
    except (ValueError, AttributeError):
        tty = False
    if tty:
        return "text"
    return "journal" if is_journal else "json"


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("slimyq").error("uncaught exception in thread %s", name, exc_info=exc)  # type: ignore[arg-type]


def setup(fmt: str | None, level: int | None = None) -> str:
    """Route log records (root logger) to stderr in ``fmt``; replaces an earlier :func:`setup`.

    ``level`` sets the root level (the worker's ``--log-level``; the worker also routes Python
    warnings and uncaught thread exceptions through logging and drops the caller and thread
    lookups neither format prints); other commands leave all that alone (warnings and errors
    only). Returns the format in use.
    """
    chosen = resolve(fmt)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            root.removeHandler(handler)
    handler = _Stderr()
    setattr(handler, _HANDLER_FLAG, True)
    if chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT if chosen == "text" else JOURNAL_FORMAT))
    root.addHandler(handler)
    if level is not None:
        # The worker: Python's warnings and a thread's uncaught exception would print their own
        # lines on stderr, breaking "one JSON object per line": they go through logging too.
        logging.captureWarnings(True)
        threading.excepthook = _thread_died
        root.setLevel(level)
        # The worker logs two lines per job. Neither format shows the caller's file and line, the
        # thread or the process name, so skip gathering them (the logging docs' "Optimization"):
        # about a tenth of a line's cost.
        logging._srcfile = None
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return "text" if chosen == "journal" else chosen
