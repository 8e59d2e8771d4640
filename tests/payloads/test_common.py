"""slimyq.payloads.common: reading a payload's optional fields without BaseModel.__getattr__."""

from __future__ import annotations

import pytest

from slimyq.jobs import registry
from slimyq.payloads.common import field_value, payload_user, validate_payload


def _every_type() -> list[registry.JobType]:
    import slimyq.jobs.audit
    import slimyq.jobs.chat
    import slimyq.jobs.database  # noqa: F401  (the types register on import)

    return list(registry.all_types())


@pytest.mark.parametrize("name", ["user_id", "request_id", "guild_id", "no_such_field"])
def test_field_value_is_getattr_with_a_default_for_every_job_type(name: str) -> None:
    for job_type in _every_type():
        model = job_type.payload
        full = model.model_construct(**{field: f"v-{field}" for field in model.model_fields})
        empty = model.model_construct()  # required fields unset: getattr raises, field_value says None
        for payload in (full, empty):
            assert field_value(payload, name) == getattr(payload, name, None), (job_type.name, name)


def test_payload_user_is_text_or_none() -> None:
    chat = next(t for t in _every_type() if t.name == "chat_bot_interaction")
    payload = validate_payload(chat.payload, {"prompt": "hi", "userId": "u1"})
    assert payload_user(payload) == "u1"
    validation = next(t for t in _every_type() if t.name == "message_validation")
    assert payload_user(validate_payload(validation.payload, {"message": {"role": "user", "content": "x"}})) is None


def test_a_plain_object_falls_back_to_getattr() -> None:
    class Plain:
        __slots__ = ("user_id",)

        def __init__(self) -> None:
            self.user_id = 7

    assert field_value(Plain(), "user_id") == 7 and field_value(Plain(), "other") is None
    assert payload_user(Plain()) == "7"


def test_a_property_or_class_attribute_is_read_as_getattr_reads_it() -> None:
    class WithProperty:
        def __init__(self) -> None:
            self.other = 1

        @property
        def user_id(self) -> str:
            return "from-property"

    class Subclass(WithProperty):
        request_id = "class-attribute"

    obj = Subclass()
    assert field_value(obj, "user_id") == "from-property" and payload_user(obj) == "from-property"
    assert field_value(obj, "request_id") == "class-attribute"
    assert field_value(obj, "other") == 1 and field_value(obj, "missing") is None

