"""One field of a claimed job hash, read defensively (:class:`~slimyq.runtime.codec.ClaimedJob`):
RQ's shapes only, anything else raises :class:`Unreadable` with the reason the job is refused.

The fields most jobs share the bytes of (``meta``: a job type and user; ``retry_intervals``) are
parsed once per distinct value of up to :data:`SHARED_SIZE` bytes; the value (read-only: a mapping
proxy, a tuple) is then shared between jobs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

INT_RANGE = 2**31  # numeric fields outside +-2**31 are refused (Redis rejects such TTLs anyway)
SHARED_SIZE = 256  # longer values (a traceparent in meta, a hostile megabyte) are parsed per job


class Unreadable(Exception):
    """The field cannot be read; the message says why ("is not valid UTF-8", "is not JSON", ...)."""


def read(value: bytes | str, parse: Callable[[str], Any]) -> Any:
    """``value`` through ``parse`` (one of this module's parsers, or ``str``)."""
    if parse is integer:
        try:  # the common case, fast: a plain integer (int() reads bytes of ASCII digits)
            number = int(value)
        except ValueError:
            pass
        else:
            if -INT_RANGE < number < INT_RANGE:
                return number
    try:
        if parse in _SHARED and len(value) <= SHARED_SIZE:
            return _shared(parse, value)
        return parse(_text(value))
    except UnicodeDecodeError:
        raise Unreadable("is not valid UTF-8") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise Unreadable(str(exc) or "cannot be read") from None


def json_text(data: bytes) -> bytes | str:
    """JSON bytes that ``json.loads`` would read as UTF-8 (an array's ``[`` and no NUL after it),
    decoded as it decodes them, without its encoding detection (1.6 us per job on this machine)."""
    if data[:1] == b"[" and data[1:2] != b"\x00":
        return data.decode("utf-8", "surrogatepass")
    return data


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@functools.lru_cache(maxsize=1024)
def _shared(parse: Callable[[str], Any], value: bytes | str) -> Any:
    """Parsed once per distinct value; what raises is not cached (the next job with those bytes
    is refused again)."""
    return parse(_text(value))


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"is not a number ({text[:40]!r})") from None
    if not math.isfinite(value) or abs(value) >= INT_RANGE:
        raise ValueError(f"is out of range ({text[:40]!r})")
    return value


def integer(text: str) -> int:
    return int(_number(text))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("is not JSON (or nested too deeply)") from None


def _json_object(text: str) -> dict[str, Any]:
    value = _json(text)
    if not isinstance(value, dict):
        raise ValueError("is not a JSON object")
    return value


def meta(text: str) -> Mapping[str, Any]:
    value = _json_object(text)
    for key in ("type", "user"):
        if key in value and not isinstance(value[key], str | int):
            raise ValueError(f"has a {key!r} that is not a string")
    return MappingProxyType(value)


def json_objects(text: str) -> list[dict[str, Any]]:
    value = _json(text)
    if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
        raise ValueError("is not a JSON array of objects")
    return value


def intervals(text: str) -> tuple[float, ...] | None:
    value = _json(text)
    if not isinstance(value, list):
        raise ValueError("is not a JSON array of seconds")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < INT_RANGE:
            raise ValueError("is not a JSON array of seconds (numbers from 0)")
        out.append(float(v))
    return tuple(out) or None


_SHARED = (meta, intervals)
NO_META: Mapping[str, Any] = MappingProxyType({})
