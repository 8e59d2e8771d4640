"""One validation rule per kind of field, used by every payload model.

The payload models are the only validator: ``slimyq enqueue`` options, bulk-file lines, a plain RQ
client's job (validated again by the worker before its handler runs) and the handlers all go
through them, so a value is decided the same way whichever way it came in.

- **Identifiers** (user ids, actions, resource types and ids, guild, request and session ids) are
  compared exactly on every database. They are never trimmed, because a trimmed id is somebody
  else's: one that is empty, starts or ends with whitespace, or holds a control character is
  refused with the reason.
- **Text** (message content) must hold something besides whitespace; it is stored as given.
- **Titles** are optional text: an empty or whitespace-only title is no title (stored NULL, as the
  original stored ``title || null``).
- **Nulls**: a null for an optional field is the same as leaving it out; a required field cannot be
  null (``Required`` for fields that take any JSON value).
- No stored text (ids, content, titles, prompts, audit fields) may contain a NUL character:
  PostgreSQL cannot store one, so it is refused on every backend.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

ID_MAX = 191  # characters: the widest identifier column (VARCHAR(191), utf8mb4-indexable on MySQL)
_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


def is_blank(value: str) -> bool:
    """Empty or whitespace only: the one definition of a blank string."""
    return not value.strip()


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\x00)")
    return value


def check_identifier(value: str) -> str:
    """An identifier exactly as given, or ``ValueError`` saying why it cannot be one."""
    if value.isprintable() and value and value[0] != " " and value[-1] != " ":
        # The usual id, decided in C: a printable string holds no control character, and the only
        # whitespace it can hold is the ASCII space (so neither blank nor untrimmed unless one ends it).
        return value
    if not value:
        raise ValueError("must not be empty")
    if is_blank(value):
        raise ValueError("must not be blank (whitespace only)")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace (ids are compared exactly and never trimmed)")
    if any(ch in _CONTROL for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    no_nul(value)
    if is_blank(value):
        raise ValueError("must not be empty or whitespace only")
    return value


def _title(value: Any) -> Any:
    if isinstance(value, str) and is_blank(value):
        return None
    return value


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError("is required (null is not a value)")
    return value


_EXACT = AfterValidator(check_identifier)
Identifier = Annotated[str, Field(max_length=ID_MAX), _EXACT]  # resource, guild, request, session ids
Name = Annotated[str, Field(max_length=100), _EXACT]  # actions, resource types
Address = Annotated[str, Field(max_length=64), _EXACT]  # IP addresses
UserId = Annotated[str, Field(max_length=ID_MAX, description="the user's id, exactly (never trimmed)"), _EXACT]
Text = Annotated[str, AfterValidator(_text)]
FreeText = Annotated[str, AfterValidator(no_nul)]  # optional details (user agent, error text)
Title = Annotated[Annotated[str, Field(max_length=200), AfterValidator(no_nul)] | None, BeforeValidator(_title)]
Required = Annotated[Any, AfterValidator(_required)]
