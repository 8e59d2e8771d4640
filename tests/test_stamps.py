"""slimyq.stamps: the same text and datetimes as ``datetime`` gives, for any epoch time."""

from __future__ import annotations

import datetime as dt
import threading

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
@example(1_764_000_000.0000005)  # half a microsecond: rounded to even
@example(0.0)
@example(253_402_300_798.9999996)  # the last fast second, rounded up out of it
@example(253_402_300_799.5)  # 9999-12-31T23:59:59.5: datetime's path
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
