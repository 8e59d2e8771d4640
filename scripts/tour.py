#!/usr/bin/env python3
"""A short end-to-end tour of slimyq on the embedded default (no Redis or database to set up).

It runs the real ``slimyq`` commands a user would type: enqueue conversation, message, chat and
audit jobs; drain them with a burst worker; show stats, jobs and an audit report. Everything
lives in a temporary data dir (its embedded Valkey is stopped at the end) unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile


def run(*args: str, check: bool = True, quiet: bool = False) -> str:
    cmd = [sys.executable, "-m", "slimyq", *args]
    if not quiet:
        print(f"\n$ slimyq {shlex.join(args)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if not quiet:
        sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if check and proc.returncode != 0:
        raise SystemExit(f"tour: `slimyq {shlex.join(args)}` exited {proc.returncode}")
    return proc.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and leave the server running")
    opts = parser.parse_args()
    for name in ("REDIS_URL", "DATABASE_URL", "SLIMYQ_CONFIG"):
        os.environ.pop(name, None)
    # The commands' output is captured and re-printed: give them this terminal's width.
    os.environ.setdefault("COLUMNS", str(max(shutil.get_terminal_size((140, 40)).columns, 100)))
    data_dir = tempfile.mkdtemp(prefix="slimyq-tour-")
    os.environ["SLIMYQ_DATA_DIR"] = data_dir
    print(f"slimyq tour: embedded Valkey and SQLite in {data_dir}")
    try:
        conv = run("enqueue", "create-conversation", "--user", "alice", "--title", "Hello slimyq", "-q")
        run("enqueue", "create-conversation", "--user", "bob", "--personality-mode", "casual")
        run("enqueue", "canary", "--queue", "audit", "--fail-times", "1")
        run("enqueue", "message-validation", "--message", '{"role": "user", "content": "  hi there  "}', check=False)
        run("enqueue", "log-event", "--action", "tour.started", "--resource-type", "tour", "--resource-id", "1",
            "--user", "alice", check=False)
        run("enqueue", "chat-bot-interaction", "--user", "alice", "What is slimyq?", check=False)
        run("stats")
        run("worker", "--burst", "--log-level", "warning")
        result = run("job", "show", conv, "--format", "json", quiet=True, check=False)
        if result:
            print(f"\n$ slimyq job show {conv} --format json\n{result}")
        run("stats")
        run("jobs", "--limit", "10", check=False)
        run("audit", "report", "--since", "1d", check=False)
        print("\ntour finished: every job ran once; try `slimyq --help` next.")
        return 0
    finally:
        if not opts.keep:
            run("server", "stop", quiet=True, check=False)
            subprocess.run(["rm", "-rf", data_dir], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
