"""``redis+sentinel://`` URLs: parsing, errors that say how to write them, connecting through real
sentinels (primary, replica and three sentinels of our own), secrets kept out of messages."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimyq.config import Settings, load_settings
from slimyq.errors import ConfigError, Unreachable
from slimyq.redact import redact_url
from slimyq.redis import connect
from slimyq.sentinel import SentinelTarget, parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from cluster_ha import SERVICE, SentinelSet


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+sentinel://s1:26379/mymaster", SentinelTarget([("s1", 26379)], "mymaster")),
    ("redis+sentinel://s1,s2:5000,10.0.0.3:26380/svc/3",
     SentinelTarget([("s1", 26379), ("s2", 5000), ("10.0.0.3", 26380)], "svc", 3)),
    ("redis+sentinel://alice:p%40ss@s1:1,s2:2/svc", SentinelTarget([("s1", 1), ("s2", 2)], "svc", 0, "alice", "p@ss")),
    ("redis+sentinel://:pw@s1/svc?sentinel_password=sp",
     SentinelTarget([("s1", 26379)], "svc", 0, None, "pw", None, "sp")),
])
def test_parse(url: str, expected: SentinelTarget) -> None:
    assert parse(url) == expected


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://s1:26379", "names no service"),
    ("redis+sentinel://s1:26379/svc/x", "database 'x' is not a number"),
    ("redis+sentinel://s1:port/svc", "sentinel port 'port' is not a number"),
    ("redis+sentinel://s1:0/svc", "out of range"),
    ("redis+sentinel://s1,,s2/svc", "a sentinel address is empty"),
    ("redis+sentinel://s1/svc?ssl=true", "unknown option 'ssl'"),
])
def test_bad_urls_fail_as_config_errors_saying_how_to_write_them(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(Settings(redis_url=url))
    message = str(caught.value)
    assert says in message and "redis+sentinel://" in message and "\n" not in message
    assert caught.value.exit_code == 2


def test_the_scheme_is_accepted_by_settings_and_the_password_redacted(tmp_path: Path) -> None:
    url = "redis+sentinel://:hunter2@s1:26379,s2:26379/svc/1"
    loaded = load_settings(env={"REDIS_URL": url}, cwd=tmp_path)
    assert loaded.settings.redis_url == url
    assert redact_url(url) == "redis+sentinel://:***@s1:26379,s2:26379/svc/1"


def test_no_sentinel_reachable_is_one_line_naming_the_url_without_secrets() -> None:
    with pytest.raises(Unreachable) as caught:
        connect(Settings(redis_url="redis+sentinel://:secretpw@127.0.0.1:1,127.0.0.1:2/svc"))
    message = str(caught.value)
    assert message.startswith("cannot reach Redis at redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/svc (")
    assert "secretpw" not in message and "\n" not in message


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    ha = SentinelSet(tmp_path_factory.mktemp("sentinels"))
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()


@pytest.mark.slow
def test_connect_reaches_the_primary_of_the_service(sentinels: SentinelSet) -> None:
    conn = connect(Settings(redis_url=sentinels.url))
    try:
        assert conn.info("replication")["role"] == "master"
        assert int(conn.info("server")["tcp_port"]) == sentinels.primary_port()
        assert conn.set("slimyq-sentinel-probe", "1")
    finally:
        conn.close()


@pytest.mark.slow
def test_unknown_service_is_unreachable_naming_it(sentinels: SentinelSet) -> None:
    url = sentinels.url.replace(f"/{SERVICE}", "/nosuchservice")
    with pytest.raises(Unreachable, match="nosuchservice"):
        connect(Settings(redis_url=url))


# ----------------------------------------------------------------- enqueue acknowledgement (WAIT)


def _canary(settings: Settings, n: int = 3) -> list[str]:
    from slimyq.jobs import registry
    from slimyq.payloads.common import validate_payload
    from slimyq.producer import EnqueueRequest, enqueue_many

    jt = registry.get("canary")
    reqs = [EnqueueRequest(jt, validate_payload(jt.payload, {}), "database") for _ in range(n)]
    conn = connect(settings)
    try:
        return [e.id for e in enqueue_many(conn, settings, reqs)]
    finally:
        conn.close()


@pytest.mark.slow
def test_enqueue_waits_for_a_replica(sentinels: SentinelSet) -> None:
    ids = _canary(Settings(redis_url=sentinels.url, redis_wait_replicas=1))
    replica = next(p for p in sentinels.data_ports if p != sentinels.primary_port())
    # WAIT returned: the replica already holds every job (no polling needed).
    assert sentinels.client(replica).exists(*(f"rq:job:{i}" for i in ids)) == len(ids)


@pytest.mark.slow
def test_too_few_replicas_is_an_error_saying_the_jobs_are_not_safe_yet(sentinels: SentinelSet) -> None:
    settings = Settings(redis_url=sentinels.url, redis_wait_replicas=2, redis_wait_timeout=0.2)
    with pytest.raises(Unreachable) as caught:
        _canary(settings, 2)
    message = str(caught.value)
    assert message.startswith("2 job(s) enqueued, but only 1 of 2 replica(s) confirmed them within 0.2 s")
    assert "redis_wait_replicas" in message and caught.value.exit_code == 1
