"""The ``canary`` job, accepted on every queue: sleep, fail N times, succeed."""

from __future__ import annotations

from pydantic import Field

from slimyq.payloads.common import Payload


class Canary(Payload):
    sleep_seconds: float = Field(default=0, ge=0, le=300)
    fail_times: int = Field(default=0, ge=0, le=100)
