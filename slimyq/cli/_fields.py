"""Payload fields as command-line options, and command-line values back into a validated payload.

Naming: ``user_id`` -> ``--user``, ``conversation_id`` -> ``--conversation``, ``guild_id`` ->
``--guild``; every other field is its snake_case name with dashes (``--personality-mode``). A job
type's ``positional`` field is also an optional argument. Every value arrives as text and goes to
pydantic as is (it coerces ``"5"`` to 5), so all problems come from one validator; fields typed as
lists or objects take JSON text, fields typed ``Any`` take JSON when it parses and text otherwise.
``-`` reads standard input for the positional field and for ``--content``.

Problems are reported as ``--option: problem`` (the name the user typed; ``PROMPT`` for a
positional), one line per bad field. Bulk files name fields in camelCase instead (see
:mod:`slimyq.bulk`). Imports pydantic only: this runs when ``slimyq --help`` builds the commands.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from slimyq.errors import ValidationFailed
from slimyq.jobs.registry import JobType
from slimyq.payloads.common import Payload, problems_of

Kind = Literal["text", "json", "any"]

SHORT_NAMES = {"user_id": "user", "conversation_id": "conversation", "guild_id": "guild"}
STDIN_FIELDS = frozenset({"content"})
# Options every enqueue command has; a payload field with one of these names gets a prefix.
RESERVED = frozenset({"queue", "job-id", "in", "at", "wait", "timeout", "format", "json", "quiet", "help"})


@dataclass(frozen=True)
class FieldSpec:
    name: str  # python field name (snake_case)
    alias: str  # wire name (camelCase)
    option: str  # "--user"
    param: str  # the command function's parameter name
    kind: Kind
    help: str
    stdin: bool  # "-" reads standard input
    positional: bool = False


def option_name(field: str) -> str:
    name = SHORT_NAMES.get(field, field).replace("_", "-")
    return f"--{'field-' + name if name in RESERVED else name}"


def _strip_optional(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Annotated:
        return _strip_optional(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        out: list[Any] = []
        for arg in get_args(annotation):
            if arg is not type(None):
                out.extend(_strip_optional(arg))
        return out
    return [annotation]


def kind_of(annotation: Any) -> Kind:
    """``json`` for lists, dicts and models; ``any`` for ``Any``/JSON values; ``text`` otherwise."""
    kinds: set[Kind] = set()
    for ann in _strip_optional(annotation):
        origin = get_origin(ann) or ann
        if origin in (list, dict, tuple, set, frozenset) or (
            isinstance(origin, type) and issubclass(origin, BaseModel)
        ):
            kinds.add("json")
        elif ann is Any or getattr(ann, "__name__", "") == "JsonValue" or hasattr(ann, "__value__"):
            kinds.add("any")
        else:
            kinds.add("text")
    if "any" in kinds or len(kinds) > 1:
        return "any"
    return kinds.pop() if kinds else "text"


_TYPE_HINTS: dict[Any, str] = {
    UUID: "a UUID",
    dt.datetime: "ISO 8601 date-time",
    bool: "true or false",
    int: "an integer",
    float: "a number",
}


def _nested_metadata(annotation: Any) -> list[Any]:
    """Constraints of an optional field's inner type (``Identifier | None``: its max length)."""
    found: list[Any] = []
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if get_origin(arg) is Annotated:
                for meta in get_args(arg)[1:]:
                    found.extend(getattr(meta, "metadata", None) or [meta])
    return found


def _help(info: FieldInfo, kind: Kind, stdin: bool) -> str:
    parts: list[str] = []
    if info.description:
        parts.append(info.description)
    for ann in _strip_optional(info.annotation):
        if get_origin(ann) is Literal:
            parts.append("one of " + ", ".join(str(a) for a in get_args(ann)))
        elif ann in _TYPE_HINTS:
            parts.append(_TYPE_HINTS[ann])
    unit = "items" if kind == "json" else "chars"
    for meta in [*info.metadata, *_nested_metadata(info.annotation)]:
        for attr, text in (("max_length", f"at most {{}} {unit}"), ("ge", ">= {}"), ("le", "<= {}")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(text.format(value))
    if kind == "json":
        parts.append("JSON text")
    elif kind == "any":
        parts.append("JSON or text")
    if stdin:
        parts.append("'-' reads stdin")
    if info.is_required():
        parts.append("required")
    elif info.default is not None and not callable(info.default_factory):
        shown = str(info.default).lower() if isinstance(info.default, bool) else info.default
        parts.append(f"default: {shown}")  # as it is typed: true, not True
    return "; ".join(parts)


def field_specs(job_type: JobType) -> list[FieldSpec]:
    specs = []
    for name, info in job_type.payload.model_fields.items():
        kind = kind_of(info.annotation)
        positional = name == job_type.positional
        stdin = positional or name in STDIN_FIELDS
        specs.append(
            FieldSpec(
                name=name,
                alias=info.alias or name,
                option=option_name(name),
                param=f"f_{name}",
                kind=kind,
                help=_help(info, kind, stdin),
                stdin=stdin,
                positional=positional,
            )
        )
    return specs


def _read_stdin() -> str:
    return sys.stdin.read().rstrip("\r\n")


def _decode(spec: FieldSpec, text: str) -> Any:
    if spec.kind == "text":
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        if spec.kind == "any":
            return text
        reason = getattr(exc, "msg", str(exc))
        raise ValueError(f"not valid JSON ({reason} at column {getattr(exc, 'colno', '?')})") from None


def build_payload(
    job_type: JobType,
    specs: list[FieldSpec],
    values: Mapping[str, str | None],
    *,
    argument: str | None = None,
    read_stdin: Callable[[], str] = _read_stdin,
    extra_problems: list[str] | None = None,
) -> Payload:
    """Validate the options' values (keyed by ``FieldSpec.param``) or raise :class:`ValidationFailed`
    with one ``--option: problem`` line per bad field (``extra_problems`` are reported with them)."""
    problems = list(extra_problems or [])
    data: dict[str, Any] = {}
    unreadable: set[str] = set()
    stdin_used = False
    by_alias = {s.alias: s for s in specs}
    for spec in specs:
        text = values.get(spec.param)
        label = spec.option
        if spec.positional and argument is not None:
            if text is not None:
                problems.append(f"{spec.option}: give the {spec.name} as an argument or as {spec.option}, not both")
                unreadable.add(spec.alias)
                continue
            text, label = argument, spec.name.upper()
        if text is None:
            continue
        if text == "-" and spec.stdin:
            if stdin_used:
                problems.append(f"{label}: only one value can be read from stdin")
                unreadable.add(spec.alias)
                continue
            text, stdin_used = read_stdin(), True
        try:
            data[spec.alias] = _decode(spec, text)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            unreadable.add(spec.alias)
    try:
        payload = job_type.payload.model_validate(data)
    except ValidationError as exc:
        for line in problems_of(exc, job_type.payload):
            name, _, msg = line.partition(": ")
            head, dot, rest = name.partition(".")
            if head in unreadable:
                continue  # already reported as unreadable
            found = by_alias.get(head)
            if found is None:
                label = head
            else:
                label = found.name.upper() if found.positional and argument is not None else found.option
            problems.append(f"{label}{dot}{rest}: {msg}")
    else:
        if not problems:
            return payload
    raise ValidationFailed(problems)
