"""The failure text users see (``codec.failure_text``): the last line, no module paths."""

from __future__ import annotations

import pytest

from slimyq.runtime import codec

TB = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (TB + "slimyq.jobs.base.AccessDenied: Conversation not found or access denied\n",
         "Conversation not found or access denied"),
        (TB + "slimyq.jobs.base.InvalidPayload: payload: must be a JSON object\n", "payload: must be a JSON object"),
        (TB + "slimyq.jobs.canary.CanaryFailure\n", "CanaryFailure"),
        (TB + "ValueError: boom: bad title\n", "ValueError: boom: bad title"),
        ("job exceeded its timeout of 5 s", "job exceeded its timeout of 5 s"),
        ("worker died: job lost its worker (abandoned)\n\n", "worker died: job lost its worker (abandoned)"),
        ("", None),
        (None, None),
    ],
)
def test_failure_text_drops_the_module_path_only(text, shown):
    assert codec.failure_text(text) == shown
