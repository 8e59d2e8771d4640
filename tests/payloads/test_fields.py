"""One rule per field (slimyq.payloads.fields), and the same decision at every entry point that
validates with the payload models: the CLI options, bulk-file lines, and the worker (plain RQ
clients' jobs). The three-backend behaviour is in tests/jobs/test_contracts.py."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimyq import bulk
from slimyq.errors import ValidationFailed
from slimyq.jobs import registry
from slimyq.payloads.common import validate_payload

CONV = str(uuid.uuid4())
TRIM = "must not start or end with whitespace (ids are compared exactly and never trimmed)"

# (job type, payload, field, problem)
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("create_conversation", {"userId": "   "}, "userId", "must not be blank (whitespace only)"),
    ("create_conversation", {"userId": ""}, "userId", "must not be empty"),
    ("create_conversation", {"userId": "ord "}, "userId", TRIM),
    ("create_conversation", {"userId": " ord"}, "userId", TRIM),
    ("create_conversation", {"userId": "o\trd"}, "userId", "must not contain control characters"),
    ("create_conversation", {"userId": None}, "userId", "Input should be a valid string"),
    ("save_message", {"conversationId": CONV, "userId": "u", "role": "user", "content": "   "}, "content",
     "must not be empty or whitespace only"),
    ("save_message", {"conversationId": CONV, "userId": "u", "role": "user", "content": "a\x00b"}, "content",
     "must not contain a NUL character (\\x00)"),
    ("get_conversations", {"userId": "\u00a0ord"}, "userId", TRIM),
    ("chat_bot_interaction", {"prompt": "a\x00b", "userId": "u"}, "prompt", "must not contain a NUL character (\\x00)"),
    ("message_validation", {"message": None}, "message", "is required (null is not a value)"),
    ("chat_bot_interaction", {"prompt": "hi", "userId": "u", "guildId": " g"}, "guildId", TRIM),
    ("log_event", {"action": "login ", "resourceType": "user", "resourceId": "u"}, "action", TRIM),
    ("log_event", {"action": "login", "resourceType": "user", "resourceId": "u", "userId": ""}, "userId",
     "must not be empty"),
    ("audit_cleanup", {"beforeDate": "2026-01-01", "excludeActions": ["Login "]}, "excludeActions.0", TRIM),
]


@pytest.mark.parametrize(("name", "payload", "field", "problem"), REFUSED)
def test_the_payload_model_refuses_with_the_field_and_reason(name, payload, field, problem):
    with pytest.raises(ValidationFailed) as info:
        validate_payload(registry.get(name).payload, payload)
    assert f"{field}: {problem}" in info.value.problems


@pytest.mark.parametrize(("name", "payload", "field", "problem"), REFUSED)
def test_a_bulk_line_is_refused_the_same_way(name, payload, field, problem):
    parser = bulk.LineParser(["chat", "database", "audit"])
    with pytest.raises(ValidationFailed) as info:
        parser.parse(json.dumps({"type": name, "payload": payload}).encode())
    assert f"{field}: {problem}" in info.value.problems


@pytest.mark.parametrize("title", ["", "   "])
def test_a_blank_title_is_no_title_and_survives_the_wire(title):
    for name, extra in (("create_conversation", {}), ("update_conversation", {"conversationId": CONV})):
        model = registry.get(name).payload
        p = validate_payload(model, {"userId": "u", "title": title, **extra})
        assert p.title is None  # type: ignore[attr-defined]
        again = validate_payload(model, p.wire())  # what the worker validates
        assert again == p


def test_identifiers_are_kept_exactly_as_given():
    p = validate_payload(registry.get("create_conversation").payload, {"userId": "Ord.Émile-😀", "title": " T "})
    assert (p.user_id, p.title) == ("Ord.Émile-😀", " T ")  # type: ignore[attr-defined]


def test_emoji_count_as_one_character_each_at_the_limit():
    model = registry.get("save_message").payload
    base = {"conversationId": CONV, "userId": "u", "role": "user"}
    assert len(validate_payload(model, {**base, "content": "😀" * 10_000}).content) == 10_000  # type: ignore[attr-defined]
    with pytest.raises(ValidationFailed, match="at most 10000 characters"):
        validate_payload(model, {**base, "content": "😀" * 10_001})


def test_optional_nulls_are_left_out_of_the_wire_and_required_ones_refused():
    model = registry.get("chat_bot_interaction").payload
    p = validate_payload(model, {"prompt": "hi", "userId": "u", "guildId": None})
    assert p.wire() == {"prompt": "hi", "userId": "u"}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_an_identifier_is_kept_exactly_or_refused_never_changed(text: str) -> None:
    model = registry.get("get_conversations").payload
    try:
        p = validate_payload(model, {"userId": text})
    except ValidationFailed as exc:
        assert len(exc.problems) == 1 and exc.problems[0].startswith("userId: ")
        assert text == "" or text != text.strip() or any(ord(c) < 32 or c == "\x7f" for c in text)
    else:
        assert p.user_id == text  # type: ignore[attr-defined]
        assert text and text == text.strip()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=30)))
def test_a_title_is_null_when_blank_and_otherwise_as_given(title: str | None) -> None:
    model = registry.get("create_conversation").payload
    try:
        p = validate_payload(model, {"userId": "u", "title": title})
    except ValidationFailed as exc:
        assert title is not None and "\x00" in title, exc.problems
        return
    expected = None if title is None or not title.strip() else title
    assert p.title == expected  # type: ignore[attr-defined]
    assert validate_payload(model, p.wire()) == p


def _identifier_by_the_rules(value: str) -> bool:
    """The rules, spelled out the slow way (the fast path must decide every string the same)."""
    return bool(value) and bool(value.strip()) and value == value.strip() and not any(
        ord(ch) < 32 or ch == "\x7f" for ch in value)


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(codec=None), max_size=12)
       | st.text(alphabet=" \t\n\x00\x1f\x7f\u00a0\u2028\u3000\u200bab", max_size=6))
def test_the_identifier_check_decides_every_string_by_the_rules(value: str) -> None:
    from slimyq.payloads.fields import check_identifier

    try:
        check_identifier(value)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == _identifier_by_the_rules(value)
