"""Shared payload base and the translation of pydantic errors into ``field: problem`` lines."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from slimyq.errors import ValidationFailed

PERSONALITY_MODES = ("helpful", "creative", "professional", "casual", "sarcastic", "technical")


class Payload(BaseModel):
    """A job payload: camelCase on the wire, unknown fields refused, strings stripped of nothing."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )

    def wire(self) -> dict[str, Any]:
        """The payload as stored in the job: camelCase keys, null optionals left out (a null
        optional is the same as none); a required field keeps its null (a cleared title), so the
        worker validates exactly what was enqueued."""
        data = self.model_dump(mode="json", by_alias=True)
        return {key: data[key] for key, required in _wire_keys(type(self)) if required or data[key] is not None}


_WIRE_KEYS: dict[type[Payload], list[tuple[str, bool]]] = {}


def _wire_keys(model: type[Payload]) -> list[tuple[str, bool]]:
    """``(camelCase key, required)`` of each field of ``model``, built once per class."""
    keys = _WIRE_KEYS.get(model)
    if keys is None:
        fields = model.model_fields.items()
        keys = _WIRE_KEYS[model] = [(info.alias or name, info.is_required()) for name, info in fields]
    return keys


def problems_of(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """``field: problem`` for every error, naming fields as the user typed them (camelCase)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        name = ".".join(loc) if loc else "payload"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            allowed = ", ".join(f.alias or n for n, f in model.model_fields.items())
            msg = f"is not a known field (known: {allowed})"
        lines.append(f"{name}: {msg}")
    return lines


def field_value(payload: Any, name: str) -> Any:
    """``getattr(payload, name, None)``, without its cost for a name the type lacks: pydantic keeps
    field values in ``__dict__``, and ``getattr`` of a missing name goes through
    ``BaseModel.__getattr__`` and its AttributeError (several microseconds per job). A name the
    class itself has (a property) is read with ``getattr``."""
    values = getattr(payload, "__dict__", None)
    if isinstance(values, dict) and name in values:
        return values[name]
    key = (type(payload), name)
    on_class = _ON_CLASS.get(key)
    if on_class is None:
        on_class = _ON_CLASS[key] = not isinstance(values, dict) or any(name in vars(k) for k in type(payload).__mro__)
    return getattr(payload, name, None) if on_class else None


_ON_CLASS: dict[tuple[type, str], bool] = {}  # (type, name): read with getattr (no __dict__, or a class attribute)


def payload_user(payload: Any) -> str | None:
    """The user a payload acts for (its ``userId``), as text; None for types without one."""
    user = field_value(payload, "user_id")
    return None if user is None else str(user)


def validate_payload(model: type[Payload], data: Any) -> Payload:
    """Validate ``data`` or raise :class:`ValidationFailed` listing every bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed([f"payload: must be a JSON object, got {type(data).__name__}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(problems_of(exc, model)) from None
