"""Counts with the right plural (the review saw "1 of 5 lines are invalid")."""

from __future__ import annotations

import pytest

from slimyq.text import count


@pytest.mark.parametrize(("n", "noun", "expected"), [
    (1, "line", "1 line"), (0, "line", "0 lines"), (5, "line", "5 lines"), (22_501, "job", "22,501 jobs"),
    (1, "audit entry", "1 audit entry"), (3, "audit entry", "3 audit entries"), (2, "day", "2 days"),
])
def test_count(n: int, noun: str, expected: str) -> None:
    assert count(n, noun) == expected


def test_count_with_an_irregular_plural() -> None:
    assert count(2, "child", "children") == "2 children"
