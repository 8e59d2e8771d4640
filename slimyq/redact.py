"""Keep secrets out of output: passwords in URLs and API keys."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET = "***"
_URL_IN_TEXT = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^\s/@:]*)(:[^\s/@]*)?@")


def redact_url(url: str | None) -> str:
    """Replace the password of a URL with ``***``; the user name stays (it helps debugging)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}:{_SECRET}@", url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    cred = f"{user}:{_SECRET}" if parts.password is not None else user
    return urlunsplit((parts.scheme, f"{cred}@{host}", parts.path, parts.query, parts.fragment))


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Redact URL passwords found in free text, and any of the given secret values."""
    out = _URL_IN_TEXT.sub(
        lambda m: f"{m.group(1)}{m.group(2)}:{_SECRET}@" if m.group(3) else m.group(0), text
    )
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, _SECRET)
    return out


def mask_secret(value: str | None) -> str:
    """Show that a secret is set without showing it."""
    if not value:
        return ""
    return _SECRET
