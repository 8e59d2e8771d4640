"""Small text helpers shared by every layer (no imports): counts with the right plural."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 job``, ``2 jobs``, ``1 audit entry``, ``3 audit entries`` (thousands separated)."""
    if n == 1:
        return f"1 {noun}"
    if plural is None:
        plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{n:,} {plural}"
