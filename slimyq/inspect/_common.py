"""Small helpers shared by the inspect modules: decoding hash fields and worker liveness."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from typing import Any

from slimyq.runtime import codec

STATES = ("queued", "started", "scheduled", "deferred", "finished", "failed", "canceled")


def text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_int(value: Any, default: int = 0) -> int:
    raw = text(value)
    try:
        return int(float(raw)) if raw not in (None, "") else default
    except ValueError:
        return default


def as_float(value: Any, default: float = 0.0) -> float:
    raw = text(value)
    try:
        return float(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def when(value: Any) -> dt.datetime | None:
    """An RQ timestamp (or an ISO one from ``slimyq_attempts``) as an aware UTC datetime."""
    raw = text(value)
    if not raw:
        return None
    parsed = codec.parse_rq_time(raw)
    if parsed is not None:
        return parsed
    try:
        out = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return out if out.tzinfo else out.replace(tzinfo=dt.UTC)


def json_obj(value: Any) -> Any:
    raw = text(value)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def meta(value: Any) -> dict[str, Any]:
    decoded = json_obj(value)
    return decoded if isinstance(decoded, dict) else {}


def attempts(value: Any) -> list[dict[str, Any]]:
    decoded = json_obj(value)
    return [a for a in decoded if isinstance(a, dict)] if isinstance(decoded, list) else []


def decode_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k) or "": text(v) or "" for k, v in raw.items()}


def job_id_of(member: Any) -> str:
    """``rq:wip`` members are ``<job id>:<execution id>``; job ids hold no colon."""
    value = text(member) or ""
    head, sep, _ = value.rpartition(":")
    return head if sep else value


def stale_after(heartbeat: float) -> float:
    """A worker whose last heartbeat is older than this is treated as gone (1.5 periods + 1 s)."""
    return heartbeat * 1.5 + 1.0


def worker_alive(fields: Mapping[str, str], heartbeat: float, now: float | None = None) -> bool:
    """A registered worker hash that still beats: present, no ``death``, heartbeat recent."""
    if not fields or fields.get("death"):
        return False
    beat = when(fields.get("last_heartbeat"))
    if beat is None:
        return True
    return (now or time.time()) - beat.timestamp() <= stale_after(heartbeat)


def type_of(info: Mapping[str, Any], description: str | None) -> str | None:
    """The job's type: slimyq's ``meta.type``, or, for a job a plain RQ client enqueued, the
    registered type of the function its RQ ``description`` (the call string) names."""
    if info.get("type") is not None:
        return str(info["type"])
    func = (description or "").partition("(")[0].strip()
    if not func:
        return None
    from slimyq.jobs import registry

    found = registry.by_func(func)
    return found.name if found is not None else None


def norm_type(name: str | None) -> str | None:
    return name.strip().replace("-", "_") if name else None
