"""A module nobody configured: a worker must refuse a job naming it without importing it.

Importing it leaves a marker file (``$SLIMYQ_TEST_MARKER``), which the test looks for.
"""

from __future__ import annotations

import os
from pathlib import Path

marker = os.environ.get("SLIMYQ_TEST_MARKER")
if marker:
    Path(marker).write_text("imported\n")


def handler(**fields: object) -> dict[str, object]:
    return {"ran": True, **fields}
