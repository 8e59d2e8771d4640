"""Job listings and one job, against a known state."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from inspect_scenario import LIVE, Scenario, enqueue_db, settings

from slimyq.errors import NotFound
from slimyq.inspect.jobs import list_jobs, redact_payload, show_job
from slimyq.runtime import codec, keys

ALL = ["chat", "database", "audit"]


def test_listing_newest_first_across_states(scenario: Scenario) -> None:
    page = list_jobs(scenario.conn, ALL, limit=50)
    by_id = {r.id: r for r in page.rows}
    assert len(page.rows) == 13
    assert {i: by_id[i].state for i in ("db-0", "db-2", "db-3", "db-5", "db-9", "au-0", "ch-0")} == {
        "db-0": "finished", "db-2": "failed", "db-3": "started", "db-5": "started", "db-9": "queued",
        "au-0": "queued", "ch-0": "scheduled"}
    stamps = [r.at for r in page.rows]
    assert all(a is not None for a in stamps)
    assert stamps == sorted(stamps, reverse=True)  # type: ignore[type-var]
    assert by_id["db-2"].error == "boom: bad title" and by_id["db-2"].attempts == 1
    assert by_id["db-7"].user == "u2" and by_id["db-0"].type == "create_conversation"


def test_filters(scenario: Scenario) -> None:
    conn = scenario.conn
    failed = list_jobs(conn, ["database"], states=["failed"])
    assert [r.id for r in failed.rows] == ["db-2"]
    u2 = list_jobs(conn, ALL, user="u2")
    assert sorted(r.id for r in u2.rows) == ["db-7", "db-8", "db-9"]
    queued = list_jobs(conn, ["database"], states=["queued"], limit=2)
    assert [r.id for r in queued.rows] == ["db-9", "db-8"]  # newest = right end of the list
    canary = list_jobs(conn, ALL, job_type="canary")
    assert sorted(r.id for r in canary.rows) == ["au-0", "au-1", "ch-0"]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert list_jobs(conn, ALL, since=future).rows == []
    recent = list_jobs(conn, ALL, since=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    assert len(recent.rows) == 13


def test_listing_is_bounded(r: redis.Redis) -> None:
    s = settings()
    enqueue_db(r, s, [f"q-{i}" for i in range(3000)], "u1")
    enqueue_db(r, s, ["q-last"], "u9")
    page = list_jobs(r, ["database"], states=["queued"], limit=5)
    assert [x.id for x in page.rows] == ["q-last", "q-2999", "q-2998", "q-2997", "q-2996"]
    assert page.scanned == 5
    # u8 has no jobs: the scan stops at 10 x limit and says so
    page = list_jobs(r, ["database"], states=["queued"], user="u8", limit=20)
    assert page.rows == [] and page.scanned == 200 and page.truncated
    # the oldest job is beyond the bound: not found, by design
    assert list_jobs(r, ["database"], states=["queued"], user="u1", limit=1).rows[0].id == "q-2999"


def test_show_job_finished_and_failed(scenario: Scenario) -> None:
    done = show_job(scenario.conn, "db-0")
    assert (done.type, done.queue, done.state, done.user) == ("create_conversation", "database", "finished", "u1")
    assert done.function == "slimyq.jobs.database.create_conversation"
    assert done.payload == {"userId": "u1", "title": "t", "personalityMode": "helpful"}
    assert done.result == {"success": True} and done.error is None
    (attempt,) = done.attempts
    assert attempt.outcome == "finished" and attempt.worker == LIVE and attempt.duration_ms == pytest.approx(20, abs=1)
    assert done.started_at and done.ended_at and done.enqueued_at and done.created_at

    bad = show_job(scenario.conn, "db-2", traceback=True)
    assert bad.state == "failed" and bad.error == "ValueError: boom: bad title"
    assert bad.traceback is not None and bad.traceback.startswith("Traceback")
    assert bad.attempts[0].error == "boom: bad title"
    assert show_job(scenario.conn, "db-2").traceback is None


def test_show_hides_other_users_jobs(scenario: Scenario) -> None:
    assert show_job(scenario.conn, "db-7", user="u2").user == "u2"
    with pytest.raises(NotFound) as other:
        show_job(scenario.conn, "db-7", user="u1")
    with pytest.raises(NotFound) as missing:
        show_job(scenario.conn, "nope", user="u1")
    assert str(other.value) == "job db-7 not found" and str(missing.value) == "job nope not found"


def test_secrets_redacted(r: redis.Redis) -> None:
    assert redact_payload({"apiKey": "k", "n": {"Password": "p", "tokens": [1], "x": 1}, "l": [{"secret": 2}]}) == {
        "apiKey": "***", "n": {"Password": "***", "tokens": "***", "x": 1}, "l": [{"secret": "***"}]}
    mapping = codec.build_job_hash(func_name="f.g", payload={"userId": "u", "accessToken": "sk-live"},
                                   queue="database", job_type="x", user="u", timeout=5, retry_intervals=[2])
    r.hset(keys.job("sec"), mapping=mapping)  # type: ignore[arg-type]
    job = show_job(r, "sec")
    assert job.payload == {"userId": "u", "accessToken": "***"}


def test_type_of_a_job_a_plain_rq_client_enqueued(r: redis.Redis) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    q = Queue("database", connection=r, serializer=JSONSerializer)
    job = q.enqueue("slimyq.jobs.database.create_conversation", kwargs={"userId": "carol"})
    other = q.enqueue("json.dumps", kwargs={})  # not a slimyq type: no type, not a guess
    page = list_jobs(r, ["database"], job_type="create-conversation")
    assert [row.id for row in page.rows] == [job.id] and page.rows[0].type == "create_conversation"
    assert show_job(r, job.id).type == "create_conversation"
    assert show_job(r, other.id).type is None
