"""``slimyq.timeparse``: durations and ISO instants, all UTC."""

from __future__ import annotations

import datetime as dt

import pytest

from slimyq.timeparse import fmt_utc, parse_duration, parse_end, parse_instant, parse_since

NOW = dt.datetime(2024, 5, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("7d", 604_800), ("2w", 1_209_600), ("1.5h", 5400), (" 3D ", 259_200)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "-1d", "1h30m"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_instants_are_utc():
    assert parse_instant("2024-05-01") == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert parse_instant("2024-05-01T12:30") == dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    assert parse_instant("2024-05-01T12:30:00Z") == dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    assert parse_instant("2024-05-01T14:30:00+02:00") == dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="not a date or time"):
        parse_instant("yesterday")


def test_end_of_a_bare_date_is_the_whole_day():
    assert parse_end("2024-05-01") == dt.datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert parse_end("2024-05-01T06:00") == dt.datetime(2024, 5, 1, 6, tzinfo=dt.UTC)


def test_since():
    assert parse_since("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_since("2024-01-01", NOW) == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("soon", NOW)


def test_fmt_utc():
    assert fmt_utc(dt.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05Z"
    assert fmt_utc(dt.datetime(2024, 1, 2, 3, 4, 5, 7)) == "2024-01-02T03:04:05.000007Z"
