"""Log formats: JSON objects one per line, text lines with fields, and which one ``auto`` picks
(terminal, systemd journal, anything else), from the flag, the environment or the config file."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimyq import logs
from slimyq.config import load_settings


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = {k: getattr(logging, k) for k in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")}
    hook = threading.excepthook
    logging.captureWarnings(False)  # an earlier setup() may hold pytest's own showwarning
    yield
    logging.captureWarnings(False)
    threading.excepthook = hook
    root.handlers[:] = handlers
    root.setLevel(level)
    for k, v in saved.items():
        setattr(logging, k, v)


def record(message: str = "m", **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("slimyq.job", logging.WARNING, __file__, 1, message, (), None)
    if fields:
        rec.event = "job.end"
        rec.fields = fields
    return rec


def test_json_has_the_base_fields_and_the_events_own() -> None:
    line = logs.JsonFormatter().format(record("job x retried", job_id="x", attempt=2, request_id=None,
                                              msg="not allowed to replace msg"))
    data = json.loads(line)
    assert "\n" not in line
    assert data["level"] == "warning" and data["event"] == "job.end" and data["logger"] == "slimyq.job"
    assert data["msg"] == "job x retried" and data["job_id"] == "x" and data["attempt"] == 2
    assert "request_id" not in data  # None is left out
    assert data["ts"].endswith("Z") and "T" in data["ts"]


def test_a_plain_log_call_is_event_log_and_a_traceback_stays_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    line = logs.JsonFormatter().format(rec)
    data = json.loads(line)
    assert "\n" not in line and data["event"] == "log" and data["msg"] == "failed here"
    assert "Traceback" in data["exc"] and "second line" in data["exc"]


def test_text_appends_fields_quoting_what_needs_it() -> None:
    line = logs.TextFormatter("%(levelname)s %(message)s").format(
        record("job x failed", outcome="failed", error="it broke = badly", empty="", n=3))
    assert line == 'WARNING job x failed outcome=failed error="it broke = badly" empty="" n=3'


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert logs.resolve("auto", Tty()) == "text"
    assert logs.resolve(None, io.StringIO()) == "json"
    assert logs.resolve("text", io.StringIO()) == "text"
    assert logs.resolve("json", Tty()) == "json"


def test_auto_is_text_on_the_systemd_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "journal").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.journald(stream)
        assert logs.resolve("auto", stream) == "journal"  # text without our own timestamp
        assert logs.resolve("json", stream) == "json"
        with (tmp_path / "other").open("w") as other:
            assert not logs.journald(other) and logs.resolve("auto", other) == "json"
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not logs.journald(io.StringIO())


def test_setup_replaces_its_own_handler_and_writes_to_the_current_stderr(
        root_handlers: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("json", logging.INFO)
    logs.setup("json", logging.INFO)
    mine = [h for h in logging.getLogger().handlers if getattr(h, "_slimyq_handler", False)]
    assert len(mine) == 1
    logs.event(logging.getLogger("slimyq.worker"), logging.INFO, "worker.start", "hello", worker="w1")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(err)["event"] == "worker.start" and json.loads(err)["worker"] == "w1"


def test_the_format_comes_from_flag_env_or_file(tmp_path: Path) -> None:
    cfg = tmp_path / "slimyq.toml"
    cfg.write_text('log_format = "text"\n')
    assert load_settings(config_file=cfg, env={}, cwd=tmp_path).settings.log_format == "text"
    env = {"SLIMYQ_LOG_FORMAT": "json"}
    assert load_settings(config_file=cfg, env=env, cwd=tmp_path).settings.log_format == "json"
    flag = load_settings(config_file=cfg, env=env, cwd=tmp_path, overrides={"log_format": "auto"})
    assert flag.settings.log_format == "auto" and flag.sources["log_format"] == "flag"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert load_settings(env={"XDG_CONFIG_HOME": str(bare)}, cwd=bare).settings.log_format == "auto"


def test_warnings_and_a_threads_crash_are_json_lines_too(root_handlers: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    logs.setup("json", logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)

    def crash() -> None:
        raise RuntimeError("thread broke")

    t = threading.Thread(target=crash, name="doomed")
    t.start()
    t.join()
    lines = [json.loads(ln) for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert any(r["logger"] == "py.warnings" and "old API" in r["msg"] for r in lines)
    crashed = [r for r in lines if "doomed" in r["msg"]]
    assert crashed and "thread broke" in crashed[0]["exc"]
