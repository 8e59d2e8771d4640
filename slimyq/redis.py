"""The Redis connection: the configured URL, or the embedded Valkey server over its unix socket.

``import redis`` below is redis-py: imports are absolute, so this module (``slimyq.redis``) never
shadows it.

Every client gets socket timeouts, TCP keepalive (redis-py's default), a periodic health check
and a retry policy with exponential backoff on connection errors and timeouts, so a short blip (a
Redis restart, a failover, a dropped connection) is retried rather than failing the command. The
first PING uses a short policy, so a command against a server that is down fails within a second;
then the client switches to the patient one. A ``redis+sentinel://`` URL gives a client of the
service's current primary (``slimyq.sentinel``): after a failover, its retries reach the promoted
replica.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from slimyq import sentinel
from slimyq.config import Settings
from slimyq.errors import ConfigError, Unreachable
from slimyq.redact import redact_text, redact_url

if TYPE_CHECKING:
    import redis.asyncio

SOCKET_TIMEOUT = 10.0  # rq raises this itself for a worker's blocking dequeue
CONNECT_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 30


def _probe_retry() -> Retry:
    """For the first PING: two quick retries (about 0.15 s at most)."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.1), retries=2)


def _steady_retry() -> Retry:
    """For the life of the client: six retries backing off 0.1 s up to 2 s each (a few seconds)."""
    return Retry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), retries=6)


def _options() -> dict[str, Any]:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": _probe_retry(),
    }


class _Packer:
    """redis-py's packing of a command, in one C call: with hiredis, redis-py (5 to 8) still runs
    every argument through its ``Encoder`` in Python first (about 0.8 us an argument; a worker's
    completion call for 10 jobs has 130, an enqueue call 22 per job), which ``hiredis.pack_command``
    does itself, the same way, for the types it takes (str as UTF-8, int, float by ``repr``,
    bytes). Anything else (a command name holding a space, bytearray, bool, None, text UTF-8
    cannot encode, and a memoryview, which hiredis would read as raw memory: a non-contiguous one
    as the wrong bytes) takes redis-py's own pure-Python packer, its ``DataError`` included."""

    def __init__(self) -> None:
        import hiredis
        from redis._parsers.encoders import Encoder
        from redis.connection import PythonRespSerializer

        encode = Encoder("utf-8", "strict", False).encode  # type: ignore[no-untyped-call, unused-ignore]
        self._pack_command = hiredis.pack_command
        self._fallback: Callable[..., list[bytes]] = PythonRespSerializer(6000, encode).pack

    def pack(self, *args: Any) -> list[bytes]:
        name = args[0]
        if not (" " in name if isinstance(name, str) else b" " in name) and memoryview not in map(type, args):
            try:
                return [self._pack_command(args)]
            except (TypeError, UnicodeError):
                pass
        return self._fallback(*args)


@functools.cache
def _shared_packer() -> _Packer:
    return _Packer()


def _pack_in_c(client: redis.Redis) -> None:
    """Give the client's future connections :class:`_Packer` (before its first command), where
    hiredis is there and the URL left the encoding at UTF-8, strict (hiredis knows no other)."""
    import codecs

    from redis.utils import HIREDIS_AVAILABLE

    try:
        import hiredis

        packs = HIREDIS_AVAILABLE and hasattr(hiredis, "pack_command")  # hiredis 2.2+ (redis 5.0 takes 1.x)
    except ImportError:
        packs = False
    kwargs = client.connection_pool.connection_kwargs
    try:
        utf8 = codecs.lookup(kwargs.get("encoding", "utf-8")).name == "utf-8"
    except LookupError:
        utf8 = False  # redis-py says so when it first encodes
    if packs and utf8 and kwargs.get("encoding_errors", "strict") == "strict":
        kwargs["command_packer"] = _shared_packer()


def describe(settings: Settings) -> str:
    """Where slimyq's Redis is, safe to print: the redacted URL, or the embedded server's socket."""
    if settings.redis_url:
        return redact_url(settings.redis_url)
    from slimyq.server import paths

    return f"embedded valkey at {paths(settings).socket}"


def connect(settings: Settings, on_start: Callable[[Path], None] | None = None) -> redis.Redis:
    """A verified (PINGed) client. Without a URL the embedded server is started if needed (and left
    running for the next command; ``on_start(socket)`` is called when this call started it)."""
    if settings.redis_url:
        try:
            if sentinel.is_sentinel_url(settings.redis_url):
                client = sentinel.client(settings.redis_url, _options())
            else:
                client = redis.Redis.from_url(settings.redis_url, **_options())
        except ValueError as exc:
            raise ConfigError(
                f"bad Redis URL {redact_url(settings.redis_url)}: {redact_text(str(exc))}; "
                "use redis://, rediss://, unix:// or redis+sentinel://"
            ) from None
    else:
        from slimyq.server import ensure_running

        client = redis.Redis(unix_socket_path=str(ensure_running(settings, on_start=on_start)), **_options())
    _pack_in_c(client)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        client.close()
        raise Unreachable(
            f"cannot reach Redis at {describe(settings)} (authentication failed: {_short(exc)}); "
            "check the user name and password in REDIS_URL"
        ) from None
    except redis.RedisError as exc:
        client.close()
        raise Unreachable(
            f"cannot reach Redis at {describe(settings)} ({_reason(exc)}); start it or set REDIS_URL"
        ) from None
    client.set_retry(_steady_retry())
    return client


async def async_connect(settings: Settings) -> redis.asyncio.Redis:
    """:func:`connect` for asyncio (``redis.asyncio``): the same URL, options, retries and messages.
    The embedded server is started (in a thread) when there is no URL. ``redis+sentinel://`` is
    for the synchronous client only."""
    import asyncio

    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry as AsyncRetry

    options = {**_options(), "retry": AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.1), retries=2)}
    if settings.redis_url:
        if sentinel.is_sentinel_url(settings.redis_url):
            raise ConfigError("redis+sentinel:// URLs work with slimyq.Client, not AsyncClient yet; use Client "
                              "(e.g. in a thread) or a redis:// URL")
        try:
            client = aredis.Redis.from_url(settings.redis_url, **options)
        except ValueError as exc:
            raise ConfigError(
                f"bad Redis URL {redact_url(settings.redis_url)}: {redact_text(str(exc))}; "
                "use redis://, rediss:// or unix://"
            ) from None
    else:
        from slimyq.server import ensure_running

        socket_path = await asyncio.to_thread(ensure_running, settings)
        client = aredis.Redis(unix_socket_path=str(socket_path), **options)
    try:
        await client.ping()
    except redis.AuthenticationError as exc:
        await client.aclose()
        raise Unreachable(
            f"cannot reach Redis at {describe(settings)} (authentication failed: {_short(exc)}); "
            "check the user name and password in REDIS_URL"
        ) from None
    except redis.RedisError as exc:
        await client.aclose()
        raise Unreachable(
            f"cannot reach Redis at {describe(settings)} ({_reason(exc)}); start it or set REDIS_URL"
        ) from None
    client.set_retry(AsyncRetry(ExponentialWithJitterBackoff(base=0.1, cap=2.0), retries=6))
    return client


def _reason(exc: BaseException) -> str:
    """A short, secret-free reason: ``connection refused``, ``timed out``, ``unknown host`` ..."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.timeout | redis.TimeoutError | TimeoutError):
            return "timed out"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause.strerror or 'handshake failed'}".lower()
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, redis.ResponseError):
        return f"server replied: {_short(exc)}"
    return _short(exc)


def _short(exc: BaseException) -> str:
    text = redact_text(str(exc)).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # redis-py says "Error 111 connecting to host:port. Connection refused." - keep the reason.
    if line.startswith("Error ") and " connecting to " in line and ". " in line:
        line = line.rsplit(". ", 1)[1]
    return line.rstrip(".").lower()[:200]
