"""Waiting for an exclusive ``flock``: polled, so the wait has a deadline (and signals get through)."""

from __future__ import annotations

import fcntl
import time
from typing import IO, Any


def acquire(file: int | IO[Any], timeout: float, poll: float = 0.05) -> bool:
    """Take an exclusive lock on ``file``, waiting up to ``timeout`` seconds for whoever holds it;
    False if it was still held then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
