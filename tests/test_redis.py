"""The Redis connection: embedded server or REDIS_URL, retries, and errors that keep secrets out."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis as redis_lib
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from slimyq import server
from slimyq.config import Settings, load_settings
from slimyq.errors import Unreachable
from slimyq.redis import _shared_packer, connect, describe


@pytest.fixture
def embedded() -> Iterator[Settings]:
    """Settings without a Redis URL; the embedded server is stopped after the test."""
    settings = load_settings().settings
    assert not settings.redis_url
    yield settings
    server.stop(settings)
    sock = str(server.paths(settings).socket)
    for proc in psutil.process_iter(["name", "cmdline"]):
        if "valkey" in (proc.info["name"] or "") and sock in " ".join(proc.info["cmdline"] or []):
            os.kill(proc.pid, signal.SIGKILL)


def test_import_redis_inside_slimyq_redis_is_redis_py() -> None:
    import slimyq.redis

    assert slimyq.redis.redis is redis_lib
    assert slimyq.redis.redis.__name__ == "redis"


def test_connect_without_url_starts_the_embedded_server_and_leaves_it_running(embedded: Settings) -> None:
    assert server.status(embedded).running is False
    conn = connect(embedded)
    assert conn.ping()
    conn.set("slimyq:test", "kept")
    conn.close()
    state = server.status(embedded)
    assert state.running
    again = connect(embedded)  # the next command finds it running
    assert again.get("slimyq:test") == b"kept"
    assert server.status(embedded).pid == state.pid
    again.close()


def test_client_is_configured_for_blips(embedded: Settings) -> None:
    conn = connect(embedded)
    kwargs = conn.connection_pool.connection_kwargs
    assert kwargs["health_check_interval"] > 0
    assert kwargs["socket_timeout"]
    retry = conn.get_retry()
    assert retry is not None and retry.get_retries() >= 3
    conn.close()


def test_a_dropped_connection_is_survived(embedded: Settings) -> None:
    conn = connect(embedded)
    conn.set("k", "v")
    other = redis_lib.Redis(unix_socket_path=str(server.paths(embedded).socket))
    assert other.client_kill_filter(_type="normal", skipme=True) >= 1  # drops conn's socket
    other.close()
    assert conn.get("k") == b"v"
    conn.close()


def test_describe(embedded: Settings) -> None:
    assert describe(embedded) == f"embedded valkey at {server.paths(embedded).socket}"
    with_url = Settings(redis_url="redis://alice:secretpw@example.com:6380/2")
    assert describe(with_url) == "redis://alice:***@example.com:6380/2"


def test_connect_with_url_uses_it_and_never_touches_the_embedded_server(
    redis_url: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedded server must not be used with a Redis URL")

    for name in ("ensure_running", "start", "status", "stop", "_spawn"):
        monkeypatch.setattr(server, name, forbidden)
    settings = load_settings().settings
    assert settings.redis_url == redis_url
    conn = connect(settings)
    assert conn.ping()
    conn.close()
    assert describe(settings) == redis_url
    data = isolated_env / "data"
    assert not (data / "valkey").exists()
    assert not list(data.rglob("valkey*")) if data.exists() else True


def test_unreachable_url_names_it_without_the_password() -> None:
    settings = Settings(redis_url="redis://:secretpw@127.0.0.1:1/0")
    with pytest.raises(Unreachable) as caught:
        connect(settings)
    message = str(caught.value)
    assert "secretpw" not in message
    assert message.startswith("cannot reach Redis at redis://:***@127.0.0.1:1/0 (connection refused)")
    assert message.endswith("start it or set REDIS_URL")
    assert "\n" not in message
    assert caught.value.exit_code == 1


def test_unix_url_with_acl_user_and_password(embedded: Settings) -> None:
    sock = server.ensure_running(embedded)
    admin = redis_lib.Redis(unix_socket_path=str(sock))
    admin.acl_setuser("alice", enabled=True, passwords=["+s3cretpw"], keys=["*"], commands=["+@all"])
    admin.close()

    good = connect(Settings(redis_url=f"unix://alice:s3cretpw@{sock}?db=0"))
    assert good.acl_whoami() == "alice"
    good.close()

    with pytest.raises(Unreachable) as caught:
        connect(Settings(redis_url=f"unix://alice:wrongpw@{sock}?db=0"))
    message = str(caught.value)
    assert "wrongpw" not in message and "authentication failed" in message
    assert "\n" not in message


def test_unreachable_unix_socket() -> None:
    with pytest.raises(Unreachable, match=r"\(no such file or directory\)"):
        connect(Settings(redis_url="unix:///nonexistent/slimyq.sock"))


# ---------------------------------------------------------------- packing commands in C

_arg = st.one_of(
    st.text(), st.binary(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.binary().map(bytearray), st.binary().map(memoryview), st.binary().map(lambda b: memoryview(b)[::2]),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
)
_name = st.sampled_from(["SET", "CLIENT SETNAME", b"EVALSHA", b"SCRIPT LOAD", "ECHO"])


@hypothesis_settings(max_examples=400, deadline=None)
@given(_name, st.lists(_arg, max_size=6))
def test_the_c_packer_packs_every_command_as_redis_py_does_or_refuses_it_as_redis_py_does(
    name: str | bytes, args: list[object]
) -> None:
    ours = _shared_packer()
    theirs = redis_lib.Connection()  # redis-py's own packer (hiredis's, or its pure-Python one)

    def packed(pack: Callable[..., list[bytes]]) -> bytes | str:
        try:
            return b"".join(bytes(part) for part in pack(name, *args))
        except (redis_lib.DataError, UnicodeError) as exc:
            return type(exc).__name__
    assert packed(ours.pack) == packed(theirs.pack_command)


def test_connect_packs_in_c_and_the_server_reads_what_it_packed(redis_url: str) -> None:
    conn = connect(load_settings().settings)
    assert isinstance(conn.connection_pool.get_connection()._command_packer, type(_shared_packer()))
    values = ["é ✓", b"\x00\xff", 7, 2.5, -(2**70)]
    assert conn.execute_command("ECHO", values[0]) == values[0].encode()
    conn.rpush("slimyq:test:packed", *values)
    assert conn.lrange("slimyq:test:packed", 0, -1) == [b"\xc3\xa9 \xe2\x9c\x93", b"\x00\xff", b"7", b"2.5",
                                                         str(-(2**70)).encode()]
    with pytest.raises(redis_lib.DataError, match="NoneType"):
        conn.set("slimyq:test:none", None)  # type: ignore[arg-type]
    assert conn.execute_command("CLIENT SETNAME", "packed") is True  # a name with a space: redis-py's path
    conn.close()


def test_a_url_with_another_encoding_keeps_redis_pys_packer(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"{redis_url}{'&' if '?' in redis_url else '?'}encoding=latin-1")
    conn = connect(load_settings().settings)
    assert "command_packer" not in conn.connection_pool.connection_kwargs
    conn.set("slimyq:test:latin", "é")
    assert conn.get("slimyq:test:latin") == b"\xe9"  # latin-1, as the URL asked
    conn.close()
