"""Output that survives pipes, one error style, honest help: every case through a real `slimyq`
process with no terminal (stdin /dev/null, stdout and stderr pipes, its own session), as a script
or cron sees it."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib

from slimyq.db import connect_url, migrate

BIN = Path(sys.executable).parent


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    db_url = f"sqlite:///{tmp_path / 'pipes.sqlite3'}"
    database = connect_url(db_url)
    migrate(database)
    database.close()
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "REDIS_URL": redis_url,
            "DATABASE_URL": db_url, "SLIMYQ_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "x"),
            "NO_COLOR": "1", "COLUMNS": "120"}


def sh(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", line], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, start_new_session=True)


# ----------------------------------------------------------------- tables in pipes


def test_jobs_table_in_a_pipe_keeps_each_job_on_one_line(env: dict[str, str]) -> None:
    long_id = "j" + "0123456789abcdef" * 7  # 113 chars: wider than any terminal's share of a column
    assert sh(f"slimyq enqueue canary --queue database --job-id {long_id}", env).returncode == 0
    found = sh(f"slimyq jobs | grep {long_id}", env)
    assert found.returncode == 0, found.stderr
    [line] = found.stdout.splitlines()
    assert line.split()[:4] == [long_id, "database", "queued", "canary"]
    header = sh("slimyq jobs | head -1", env).stdout.split()
    assert header == ["id", "queue", "state", "type", "user", "age", "tries", "error"]
    assert all(len(x) > 120 or "─" not in x for x in sh("slimyq jobs", env).stdout.splitlines())  # no boxes


def test_stats_in_a_pipe_is_plain_columns(env: dict[str, str]) -> None:
    out = sh("slimyq stats | awk '{print $1, $5}'", env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["queue done", "chat 0", "database 0", "audit 0"]


# ----------------------------------------------------------------- one error style


@pytest.mark.parametrize(("line", "expected"), [
    ("slimyq enqueue bogus-type", r"error: No such command 'bogus-type' \(one of: create-conversation, .*canary.*\); "
                                  r"see `slimyq enqueue --help`"),
    ("slimyq audit cleanup --days 0", r"error: --days: .*1.*; see `slimyq audit cleanup --help`"),
    ("slimyq stats --bogus", r"error: No such option: --bogus.*; see `slimyq stats --help`"),
    ("slimyq history prune", r"error: Missing option '--days'; see `slimyq history prune --help`"),
    ("slimyq nosuch", r"error: No such command 'nosuch' \(one of: worker, .*\); see `slimyq --help`"),
    ("slimyq config show --format bogus",
     r"error: --format: 'bogus' is not one of 'table', 'json', 'ndjson', 'csv'; see `slimyq config show --help`"),
    ("slimyq stats --json true", r"error: 'true' is not a queue: flags such as --json take no value .*"),
    ("slimyq workers --json true", r"error: Got unexpected extra argument.*\(flags such as --json take no value\).*"),
])
def test_usage_errors_are_one_line_exit_2(env: dict[str, str], line: str, expected: str) -> None:
    proc = sh(line, env)
    assert proc.returncode == 2 and proc.stdout == ""
    [message] = proc.stderr.splitlines()
    assert re.fullmatch(expected, message), message
    assert "╭" not in proc.stderr and "Traceback" not in proc.stderr


def test_no_arguments_print_the_help_and_no_error_line(env: dict[str, str]) -> None:
    for line in ("slimyq", "slimyq audit"):
        proc = sh(line, env)
        assert proc.returncode == 2 and "Usage: " in proc.stdout and "error:" not in proc.stderr


def test_a_terminal_gets_the_same_one_line_error(env: dict[str, str], on_tty) -> None:
    code, shown, _ = on_tty(["slimyq", "enqueue", "bogus-type"], env, {"stdin", "stdout", "stderr"})
    assert code == 2
    assert shown.startswith("error: No such command 'bogus-type'") and "╭" not in shown


# ----------------------------------------------------------------- version, help


def test_version(env: dict[str, str]) -> None:
    from importlib.metadata import version

    proc = sh("slimyq --version", env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"slimyq {version('slimyq')}\n", "")


def test_help_shows_what_values_look_like(env: dict[str, str]) -> None:
    stats = sh("slimyq stats --help", env).stdout
    assert not re.search(r"<(bool|str|int|float|list\[str\])>", stats), stats
    assert re.search(r"--json\s+Short for --format json", stats)  # a flag: no value
    assert re.search(r"--interval\s+NUMBER", stats) and "table|json|ndjson|csv" in stats
    assert "slimyq stats [OPTIONS] [QUEUE]..." in stats and re.search(r"QUEUE\s+TEXT\.\.\.\s+Queues to show", stats)
    assert re.search(r"--since\s+DURATION\|DATE\s", stats)
    for command in ("jobs", "audit report", "audit list", "history list", "history stats"):
        assert re.search(r"--since\s+DURATION\|DATE\s", sh(f"slimyq {command} --help", env).stdout), command
    assert re.search(r"--max-age\s+DURATION\s", sh("slimyq check --help", env).stdout)
    report = sh("slimyq audit report --help", env).stdout
    assert re.search(r"--start\s+DATE\s", report) and re.search(r"--end\s+DATE\s", report)
    log_event = sh("slimyq enqueue log-event --help", {**env, "COLUMNS": "200"}).stdout
    assert re.search(r"--success\s+true\|false\s+whether the action succeeded; true or false; default: true\s",
                     log_event), log_event
    canary = sh("slimyq enqueue canary --help", env).stdout
    assert re.search(r"--fail-times\s+INTEGER", canary) and re.search(r"--sleep-seconds\s+NUMBER", canary)
    save = sh("slimyq enqueue save-message --help", env).stdout
    assert re.search(r"--conversation\s+UUID", save) and re.search(r"--role\s+user\|assistant\|system", save)
    enqueue = sh("slimyq enqueue --help", env).stdout
    assert "completion" not in enqueue.replace("chat completion", "")
    top = sh("slimyq --help", env).stdout
    assert "--install-completion" in top and "--version" in top and re.search(r"--config\s+-c\s+PATH", top)


def test_help_paragraphs_are_not_broken_mid_sentence(env: dict[str, str]) -> None:
    wide = {**env, "COLUMNS": "200"}
    text = sh("slimyq jobs --help", wide).stdout
    # the docstring breaks after "read newest first and"; the terminal's width decides instead
    assert re.search(r"read newest first and at most min\(10 x limit", text), text


# ----------------------------------------------------------------- shapes


def test_stats_json_is_one_record_per_queue_with_or_without_by_type(env: dict[str, str]) -> None:
    plain = json.loads(sh("slimyq stats --json", env).stdout)
    by_type = json.loads(sh("slimyq stats --by-type --json", env).stdout)
    assert [q["queue"] for q in plain] == [q["queue"] for q in by_type] == ["chat", "database", "audit"]
    assert all(q["by_type"] == [] for q in by_type) and all("by_type" not in q for q in plain)
    nd = [json.loads(x) for x in sh("slimyq stats --by-type --format ndjson", env).stdout.splitlines()]
    assert [q["queue"] for q in nd] == ["chat", "database", "audit"]


@pytest.mark.parametrize(("command", "first"), [
    ("slimyq jobs --format csv", "id"),
    ("slimyq workers --format csv", "name"),
    ("slimyq audit list --format csv", "id"),
    ("slimyq history list --format csv", "job_id"),
    ("slimyq jobs --history --format csv", "job_id"),
])
def test_an_empty_csv_still_has_its_header(env: dict[str, str], command: str, first: str) -> None:
    proc = sh(command, env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert len(rows) == 1 and first in rows[0], proc.stdout


REPORT_HEADER = ["section", "start", "end", "total", "successful", "failed", "success_rate", "action", "count",
                 "user_id", "resource_type", "failure_rate"]


def test_report_csv_columns_do_not_depend_on_the_data(env: dict[str, str]) -> None:
    empty = list(csv.reader(io.StringIO(sh("slimyq audit report --format csv", env).stdout)))
    assert empty[0] == REPORT_HEADER and [row[0] for row in empty[1:]] == ["summary"]
    for success in ("true", "false"):
        logged = sh("slimyq enqueue log-event --action login --resource-type session --resource-id s --user alice "
                    f"--success {success} -q", env)
        assert logged.returncode == 0, logged.stderr
    worked = sh("slimyq worker audit --burst", env)
    assert worked.returncode == 0, worked.stderr
    full = list(csv.DictReader(io.StringIO(sh("slimyq audit report --format csv", env).stdout)))
    assert list(full[0]) == REPORT_HEADER
    assert [row["section"] for row in full] == ["summary", "actions", "top_users", "top_resources", "failure_analysis"]
    assert (full[0]["total"], full[1]["action"], full[4]["failure_rate"]) == ("2", "login", "50.0")


@pytest.mark.parametrize(("command", "columns"), [
    ("slimyq history stats --format csv", ["section", "queue", "runs", "job_type"]),
    ("slimyq stats --by-type --format csv", ["section", "queue", "queued", "p95_seconds", "type", "completed"]),
])
def test_section_csv_headers_name_every_sections_columns(env: dict[str, str], command: str,
                                                          columns: list[str]) -> None:
    proc = sh(command, env)
    assert proc.returncode == 0, proc.stderr
    header = next(csv.reader(io.StringIO(proc.stdout)))
    assert [c for c in header if c in columns] == columns, header


def test_workers_state_follows_current_jobs(env: dict[str, str], r: redis_lib.Redis) -> None:
    import time

    beat = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    for name, state, jobs in (("slimyq.h1.1.database", "idle", ["a:1", "b:2"]), ("slimyq.h2.2.database", "busy", [])):
        r.hset(f"rq:worker:{name}", mapping={"birth": beat, "last_heartbeat": beat, "queues": "database", "pid": 1,
                                            "hostname": "h", "state": state, "slimyq_concurrency": 10})
        r.expire(f"rq:worker:{name}", 60)
        r.sadd("rq:workers", f"rq:worker:{name}")
        if jobs:
            r.sadd(f"rq:worker:{name}:executions", *jobs)
    rows = list(csv.DictReader(io.StringIO(sh("slimyq workers --format csv", env).stdout)))
    assert {row["name"]: row["state"] for row in rows} == {"slimyq.h1.1.database": "busy",
                                                          "slimyq.h2.2.database": "idle"}
    table = sh("slimyq workers | grep slimyq.h1", env).stdout.split()
    assert table[:3] == ["slimyq.h1.1.database", "database", "busy"]


# ----------------------------------------------------------------- the embedded server


def test_embedded_server_says_it_stays_only_on_a_terminal(tmp_path: Path, on_tty) -> None:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "NO_COLOR": "1",
           "SLIMYQ_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "x"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'e.sqlite3'}"}
    try:
        code, shown, _ = on_tty(["slimyq", "stats", "--json"], env, {"stderr"})
        assert code == 0
        note = " ".join(shown.split())
        assert "started the embedded Valkey server" in note and "slimyq server stop" in note
        again = sh("slimyq stats --json", env)  # already running: nothing to say, and cron sees nothing anyway
        assert again.returncode == 0 and again.stderr == ""
    finally:
        sh("slimyq server stop", env)
