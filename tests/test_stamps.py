"""slimyq.stamps: the same text and datetimes as ``datetime`` gives, for any epoch time."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slimyq import stamps

# 1960 to 10001: the fast path's range (1970-9999) and both sides of it.
TIMES = st.floats(min_value=-315_619_200.0, max_value=253_433_923_200.0, allow_nan=False)


def _datetime(ts: float) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None


@given(TIMES)
@example(1_764_000_000.9999996)  # microseconds round up into the next second
@example(1_764_000_000.0078125)  # exactly half a microsecond (a binary fraction): to even, .007812
@example(1_764_000_000.0234375)  # ... and .023438
@example(0.0)
@example(253_402_300_798.99999)  # the last second of the fast path
@example(253_402_300_799.0)  # the first of datetime's path
@example(253_402_300_799.5)  # 9999-12-31T23:59:59.5
def test_stamps_match_datetime(ts: float) -> None:
    expected = _datetime(ts)
    if expected is None:  # out of datetime's range: stamps refuses it too, with datetime's error
        for convert in (stamps.rq_time, stamps.iso_ms, stamps.naive_utc):
            try:
                convert(ts)
            except (ValueError, OverflowError, OSError):
                continue
            raise AssertionError(f"{convert.__name__}({ts!r}) did not raise")
        return
    assert stamps.rq_time(ts) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert stamps.iso_ms(ts) == expected.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert stamps.naive_utc(ts) == expected.replace(tzinfo=None)
    assert stamps.naive_utc(ts).tzinfo is None


@given(st.lists(TIMES.filter(lambda t: 0 <= t < 253_402_300_799.0), min_size=2, max_size=20))
def test_the_cached_second_never_leaks_into_another(times: list[float]) -> None:
    """The second formatted last is reused only for that second, whatever came in between."""
    for ts in times:
        expected = dt.datetime.fromtimestamp(ts, dt.UTC)
        assert stamps.rq_time(ts) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_what_is_not_a_float_takes_datetimes_path() -> None:
    from decimal import Decimal

    assert stamps.rq_time(5) == "1970-01-01T00:00:05.000000Z"  # type: ignore[arg-type]
    try:
        stamps.rq_time(Decimal("5.5"))  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("a Decimal was formatted (datetime refuses it)")


def test_a_leap_second_reads_as_datetime_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a "right/" time zone gmtime reports second 60; datetime (and RQ) have 59."""
    real = time.gmtime
    leap = 1_483_228_826  # 2016-12-31T23:59:60 in right/UTC

    def gmtime(sec: float | None = None) -> time.struct_time:
        if sec == leap:
            return time.struct_time((2016, 12, 31, 23, 59, 60, 5, 366, 0))
        return real(sec)

    monkeypatch.setattr(stamps.time, "gmtime", gmtime)
    assert stamps.rq_time(leap + 0.5) == "2016-12-31T23:59:59.500000Z"
    assert stamps.naive_utc(leap + 0.5) == dt.datetime(2016, 12, 31, 23, 59, 59, 500000)


def test_threads_formatting_different_seconds_each_get_their_own() -> None:
    wrong: list[tuple[float, str]] = []

    def run(base: float) -> None:
        for i in range(3000):
            ts = base + i * 1.000001
            text = stamps.rq_time(ts)
            if text != dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"):
                wrong.append((ts, text))

    threads = [threading.Thread(target=run, args=(1_700_000_000.25 + k * 86_400 * 365,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
