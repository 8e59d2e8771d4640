"""`slimyq --help` stays fast: it must not import rq, peewee or openai."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from slimyq.cli import main
sys.argv = ["slimyq", "--help"]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("rq", "peewee", "openai", "redis", "psycopg", "pymysql") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_help_imports_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert "HEAVY=\n" in out or out.rstrip().endswith("HEAVY="), out[-300:]


def test_python_dash_m_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "slimyq", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "worker" in proc.stdout and "enqueue" in proc.stdout
