"""Secrets out of output: URL passwords and API keys."""

from __future__ import annotations

import pytest

from slimyq.redact import mask_secret, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # user and password: the user stays, it helps debugging
        ("redis://admin:s3cret@cache:6379/0", "redis://admin:***@cache:6379/0"),
        ("postgresql://app:s3cret@db.example:5432/slimyq", "postgresql://app:***@db.example:5432/slimyq"),
        ("mysql://root:s3cret@127.0.0.1/x?charset=utf8mb4", "mysql://root:***@127.0.0.1/x?charset=utf8mb4"),
        # password only (Redis AUTH without an ACL user)
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        # TLS, percent-encoded password
        ("rediss://default:p%40ss@redis.example:6380/1", "rediss://default:***@redis.example:6380/1"),
        # a literal "@" in the password must not leak its tail
        ("redis://u:p@ss@cache/0", "redis://u:***@cache/0"),
        # no credentials, or a user without a password: unchanged
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://reader@cache:6379/0", "redis://reader@cache:6379/0"),
        ("sqlite:////var/lib/slimyq/slimyq.sqlite3", "sqlite:////var/lib/slimyq/slimyq.sqlite3"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        # unix sockets, with and without a password
        ("unix:///run/valkey/valkey.sock?db=0", "unix:///run/valkey/valkey.sock?db=0"),
        ("unix://:s3cret@/run/valkey/valkey.sock?db=0", "unix://:***@/run/valkey/valkey.sock?db=0"),
        ("unix:///run/v.sock?db=0&password=s3cret", "unix:///run/v.sock?db=0&password=***"),
        # password as a query parameter
        ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
        # IPv6 hosts and ports keep their exact spelling
        ("redis://u:s3cret@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_redact_url_none_and_unparseable() -> None:
    assert redact_url(None) == ""
    assert "s3cret" not in redact_url("redis://u:s3cret@[::1")  # urlsplit raises ValueError here


def test_redact_text() -> None:
    text = (
        "cannot reach redis://admin:s3cret@cache:6379/0 (connection refused); "
        "db mysql://root:s3cret@db/x; plain redis://cache/0; user only redis://reader@cache/0; "
        "https://h/x?token=s3cret&x=1; key sk-abc123456"
    )
    out = redact_text(text, ["sk-abc123456"])
    assert "s3cret" not in out and "sk-abc123456" not in out
    assert "redis://admin:***@cache:6379/0" in out
    assert "mysql://root:***@db/x" in out
    assert "redis://cache/0" in out and "redis://reader@cache/0" in out
    assert "token=***&x=1" in out
    assert out.endswith("key ***")


def test_redact_text_ignores_short_and_empty_secrets() -> None:
    assert redact_text("a b c", ["", "a"]) == "a b c"


def test_mask_secret() -> None:
    assert mask_secret("sk-anything") == "***"
    assert mask_secret("") == ""
    assert mask_secret(None) == ""
