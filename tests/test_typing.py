"""The Python API type-checks for its users under ``mypy --strict``: the example ASGI app and the
test team's job package are user code (slimyq's own modules are checked by the project's mypy run;
``--follow-imports=silent`` uses their types without re-reporting them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_CODE = [ROOT / "examples" / "chat_api.py", ROOT / "tests" / "jobpkg" / "slimyq_testjobs" / "__init__.py",
             ROOT / "tests" / "jobpkg" / "slimyq_testjobs_cfg" / "__init__.py"]


def test_user_code_is_mypy_strict_clean(tmp_path: Path) -> None:
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # the editable install is an import hook mypy cannot follow
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), *map(str, USER_CODE)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 3 source files" in done.stdout
