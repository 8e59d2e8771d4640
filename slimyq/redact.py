"""Keep secrets out of output: passwords in URLs and API keys."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SECRET = "***"
# scheme://user:password@ -- the password runs to the last "@" of the authority (a literal "@" in a
# password is a common mistake, and it must not leak the part after it).
_URL_IN_TEXT = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^\s/?#@:]*)(:[^\s/?#]*)?@", re.IGNORECASE)
_QUERY_SECRET = re.compile(
    r"([?&](?:password|passwd|pass|pwd|sslpassword|secret|token|api_key|apikey|access_token)=)[^&#\s]*",
    re.IGNORECASE,
)


def _redact_query(text: str) -> str:
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{_SECRET}", text)


def redact_url(url: str | None) -> str:
    """Replace the password of a URL with ``***``; the user name stays (it helps debugging).

    Passwords given as query parameters (``redis://h/0?password=...``) are redacted too. Host,
    port, path and the rest of the query are kept exactly as written.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{_SECRET}@{hostport}" if colon else f"{user}@{hostport}"
    # Splice rather than urlunsplit: it would turn ``unix:///path`` into ``unix:/path``.
    head = f"{url[: len(parts.scheme)]}://" if url[len(parts.scheme) :].startswith("://") else ""
    if not head:
        return _redact_query(url)
    rest = url[len(head) + len(parts.netloc) :]
    return f"{head}{netloc}{_redact_query(rest)}"


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Redact URL passwords found in free text, and any of the given secret values."""
    out = _URL_IN_TEXT.sub(
        lambda m: f"{m.group(1)}{m.group(2)}:{_SECRET}@" if m.group(3) else m.group(0), text
    )
    out = _redact_query(out)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, _SECRET)
    return out


def mask_secret(value: str | None) -> str:
    """Show that a secret is set without showing it."""
    if not value:
        return ""
    return _SECRET
