"""Reading a claimed job hash: every field defensively, once; what can't be read names the field.
And the failure text users see (``codec.failure_text``): the last line, no module paths."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimyq.runtime import codec
from slimyq.runtime.codec import ClaimedJob, UndecodableJob


def _job(**raw: bytes) -> ClaimedJob:
    return ClaimedJob("j1", "e1", {"data": codec.encode_data("f", {}), **raw})


def test_plain_rq_fields_parse_and_missing_ones_take_defaults() -> None:
    job = _job(retries_left=b"2", timeout=b"30", retry_intervals=b"[1, 2.5]", result_ttl=b"100",
               meta=b'{"type": "canary", "user": "u1"}', enqueued_at=b"2026-01-02T03:04:05.000006Z")
    assert job.problem is None
    read = (job.retries_left(9), job.timeout(9), job.retry_intervals([7.0]), job.result_ttl())
    assert read == (2, 30, [1.0, 2.5], 100)
    assert job.meta == {"type": "canary", "user": "u1"}
    assert job.enqueued_at == dt.datetime(2026, 1, 2, 3, 4, 5, 6)  # naive UTC, as the history column holds it
    empty = ClaimedJob("j2", "e2", {"retries_left": b"", "timeout": None})
    assert empty.problem is None
    assert (empty.retries_left(2), empty.timeout(30), empty.failure_ttl()) == (2, 30, codec.DEFAULT_FAILURE_TTL)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("retries_left", b"1e999", "out of range"),
    ("retries_left", b"-inf", "out of range"),
    ("result_ttl", b"9" * 400, "out of range"),
    ("failure_ttl", b"ten", "not a number"),
    ("timeout", b"nan", "out of range"),
    ("retry_intervals", b'["x"]', "not a JSON array of seconds"),
    ("retry_intervals", b"[-1]", "not a JSON array of seconds"),
    ("retry_intervals", b'{"a": 1}', "not a JSON array of seconds"),
    ("slimyq_attempts", b"[1]", "not a JSON array of objects"),
    ("slimyq_attempts", b"[" * 100_000, "not JSON"),
    ("meta", b'{"user": {"id": 1}}', "'user' that is not a string"),
    ("meta", b"\xff", "not valid UTF-8"),
    ("enqueued_at", b"\xc3\x28", "not valid UTF-8"),
])
def test_an_unreadable_field_makes_the_job_refused_naming_it(name: str, value: bytes, says: str) -> None:
    job = _job(**{name: value})
    assert job.problem is not None and job.problem.startswith("refused: job field")
    assert repr(name) in job.problem and says in job.problem
    # The other accessors still answer (with defaults) so the refusal itself can be written.
    assert job.retries_left(2) >= 0 and job.timeout(5) > 0 and job.result_ttl() > 0 and job.failure_ttl() > 0
    assert isinstance(job.meta, Mapping) and isinstance(job.attempts, list)


def test_an_id_that_is_not_utf8_is_refused_and_kept_as_its_bytes() -> None:
    raw = b"id-\xff"
    job = ClaimedJob(codec.text_id(raw), "e1", {"data": codec.encode_data("f", {})})
    assert job.problem == "refused: the job id is not valid UTF-8; delete the job"
    assert job.key_id == raw and codec.wire(job.member) == raw + b":e1"
    assert codec.printable(job.id) == "id-\ufffd"
    assert ClaimedJob("id-\u00e9-\U0001f600", "e1", {}).problem is None


def test_decompression_is_bounded() -> None:
    bomb = zlib.compress(b"[" + b" " * 5_000_000 + b"]", 9)
    assert len(bomb) < 10_000
    with pytest.raises(UndecodableJob, match="decompresses to more than max_job_size"):
        ClaimedJob("j", "e", {"data": bomb}).call(1_000_000)
    with pytest.raises(UndecodableJob, match="larger than max_job_size"):
        ClaimedJob("j", "e", {"data": b"[" + b" " * 2000 + b"]"}).call(1024)
    func, _, args, kwargs = ClaimedJob("j", "e", {"data": codec.encode_data("f", {"a": 1})}).call(1024)
    assert (func, args, kwargs) == ("f", [], {"a": 1})


@pytest.mark.parametrize("data", [b'["f", null, 5, {}]', b'["f", null, [], "x"]', b'["f", null, {}, []]'])
def test_args_and_kwargs_must_be_containers(data: bytes) -> None:
    with pytest.raises(UndecodableJob, match="args must be a JSON array and kwargs a JSON object"):
        ClaimedJob("j", "e", {"data": zlib.compress(data)}).call()


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


def test_rq_times_parse_fast_and_strictly() -> None:
    from slimyq.runtime.codec import parse_rq_time

    assert parse_rq_time(b"2026-11-23T14:21:30.123456Z") == dt.datetime(2026, 11, 23, 14, 21, 30, 123456, dt.UTC)
    assert parse_rq_time("2026-11-23T14:21:30Z") == dt.datetime(2026, 11, 23, 14, 21, 30, tzinfo=dt.UTC)
    for text in ("2026-11-23T14:21:30.123456Z", "2026-11-23T14:21:30Z"):
        aware, naive = parse_rq_time(text), parse_rq_time(text, aware=False)
        assert aware is not None and naive is not None and naive.tzinfo is None
        assert naive == aware.replace(tzinfo=None)
    # Shapes the fast path must not let through (ISO forms strptime rejects), and bad digits.
    for text in ("2026-11-23T14:21:30.1+05:00Z", "2026-W47-1T14:21:30.123456Z", "2026-13-23T14:21:30.123456Z",
                 "2026-11-23 14:21:30.123456Z", ""):
        assert parse_rq_time(text) is None, text


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                     max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), _JSON, max_size=5), st.integers(min_value=0, max_value=40_000))
def test_job_data_is_what_rqs_own_reader_decodes(kwargs: dict[str, Any], padding: int) -> None:
    """``data`` is compressed with a small window (cheaper to set up): RQ's own path, a plain
    ``zlib.decompress`` and its JSON serializer, reads it back exactly, short or long."""
    import zlib

    from rq.serializers import JSONSerializer

    kwargs = {**kwargs, "pad": "x y z " * padding}
    data = codec.encode_data("slimyq.jobs.chat.f", kwargs)
    assert JSONSerializer.loads(zlib.decompress(data)) == ["slimyq.jobs.chat.f", None, [], kwargs]
    assert ClaimedJob("j", "e", {"data": data}).call(10**7)[3] == kwargs


def test_a_job_id_is_whole_no_trailing_newline() -> None:
    assert codec.JOB_ID.match("A" * 128) and not codec.JOB_ID.match("A" * 128 + "\n")
    assert not codec.JOB_ID.match("ok\n") and not codec.JOB_ID.match("A" * 129)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=40).map(lambda b: b"[" + b),
    st.binary(max_size=40),
    st.lists(_JSON, max_size=4).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
))
def test_job_data_reads_as_json_loads_reads_its_bytes(data: bytes) -> None:
    """The call's bytes are decoded before json.loads when it would read them as UTF-8: the same
    value, or the same refusal, as json.loads given the bytes themselves."""
    raw = zlib.compress(data)
    try:
        expected: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        expected = None
    job = ClaimedJob("j1", "e1", {"data": raw})
    try:
        got: Any = list(job.call())
    except UndecodableJob as exc:
        got = None if "not JSON" in str(exc) else "shape"
    if expected is None:
        assert got is None
    elif isinstance(expected, list) and len(expected) == 4 and isinstance(expected[0], str) \
            and isinstance(expected[2], list | type(None)) and isinstance(expected[3], dict | type(None)):
        assert got == [expected[0], expected[1], list(expected[2] or []), dict(expected[3] or {})]
    else:
        assert got == "shape"


def test_shared_fields_are_read_only_and_a_bad_one_is_refused_every_time() -> None:
    meta = b'{"type": "canary", "user": "u-shared"}'
    first, second = _job(meta=meta, retry_intervals=b"[1, 2]"), _job(meta=meta, retry_intervals=b"[1, 2]")
    assert first.meta == second.meta == {"type": "canary", "user": "u-shared"}
    with pytest.raises(TypeError):
        first.meta["user"] = "someone else"  # type: ignore[index]
    intervals = first.retry_intervals([9.0])
    intervals.append(99.0)  # the caller's own copy
    assert second.retry_intervals([9.0]) == [1.0, 2.0]
    bad = b'{"type": ["not", "a", "string"]}'
    for _ in range(2):  # a refusal is not cached as a value: the second job is refused too
        assert _job(meta=bad).problem is not None
    long_meta = b'{"type": "canary", "traceparent": "' + b"0" * 400 + b'"}'  # parsed per job, same result
    assert _job(meta=long_meta).meta["type"] == _job(meta=long_meta).meta["type"] == "canary"
