"""Redis Sentinel URLs: ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``.

The client asks the sentinels for the current primary of ``service_name`` (redis-py's
``Sentinel.master_for``) and asks again whenever a connection to it fails, so after a failover
commands go to the promoted replica. ``user:password`` are the primary's (and replicas')
credentials; sentinels that need a password of their own take ``?sentinel_password=...`` (and
``sentinel_username``). The port defaults to 26379.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379
_FIX = f"write it as {SCHEME}://[user:password@]host:port[,host:port...]/service_name[/db]"


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(f"{SCHEME}://")


def parse(url: str) -> SentinelTarget:
    """Parse a sentinel URL; ``ValueError`` says what is wrong and how to write it."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise ValueError(f"a sentinel address is empty; {_FIX}")
        try:
            number = int(port) if sep else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"sentinel port {port!r} is not a number; {_FIX}") from None
        if not 0 < number < 65536:
            raise ValueError(f"sentinel port {number} is out of range; {_FIX}")
        sentinels.append((host.strip("[]"), number))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"the URL names no service (or too many path parts); {_FIX}")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"database {path[1]!r} is not a number; {_FIX}")
        db = int(path[1])
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"sentinel_password", "sentinel_username"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}; only sentinel_username and "
                         "sentinel_password are accepted")
    return SentinelTarget(
        sentinels=sentinels, service=unquote(path[0]), db=db,
        username=unquote(user) or None, password=unquote(password) if colon else None,
        sentinel_username=query.get("sentinel_username"), sentinel_password=query.get("sentinel_password"),
    )


def client(url: str, options: dict[str, Any]) -> redis.Redis:
    """A client of the service's current primary (not connected yet)."""
    target = parse(url)
    # One try per sentinel and question: discovery moves on to the next sentinel itself, and the
    # primary's client retries the whole discovery (redis-py's default would back off per sentinel).
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_kwargs["retry"] = Retry(NoBackoff(), 0)
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call, unused-ignore]
    primary: redis.Redis = sentinel.master_for(target.service, db=target.db, username=target.username,
                                               password=target.password, **options)  # type: ignore[no-untyped-call, unused-ignore]
    return primary
