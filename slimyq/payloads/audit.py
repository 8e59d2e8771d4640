"""Payloads of the ``audit`` queue: event logging, cleanup and reports.

``log_event`` keeps the original system's contract for its three required fields: when any of
``action``, ``resourceType`` or ``resourceId`` is absent or empty, validation fails with the fixed
message :data:`MISSING_FIELDS` (listing all three, as the original did).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, JsonValue, ValidationError, field_validator, model_validator

from slimyq.payloads.common import Payload, problems_of
from slimyq.payloads.fields import Address, FreeText, Identifier, Name, is_blank

MISSING_FIELDS = "Missing required audit fields: action, resourceType, resourceId"
_REQUIRED = (("action", "action"), ("resource_type", "resourceType"), ("resource_id", "resourceId"))
MAX_BULK_EVENTS = 10_000


def _utc_naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


class LogEvent(Payload):
    action: Name
    resource_type: Name
    resource_id: Identifier
    user_id: Identifier | None = None
    details: JsonValue = Field(default=None, description="extra data about the action (a JSON object)")
    ip_address: Address | None = None
    user_agent: FreeText | None = Field(default=None, max_length=2000)
    session_id: Identifier | None = None
    request_id: Identifier | None = None
    success: bool = Field(default=True, description="whether the action succeeded")
    error_message: FreeText | None = Field(default=None, max_length=10_000)

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, alias in _REQUIRED:
                value = data.get(alias, data.get(name))
                if value is None or (isinstance(value, str) and is_blank(value)):
                    raise ValueError(MISSING_FIELDS)
        return data


class BulkLogEvents(Payload):
    # Each event is validated on its own by the handler, so one bad event fails only its index.
    events: list[Any] = Field(max_length=MAX_BULK_EVENTS, description="log_event payloads")


class AuditCleanup(Payload):
    before_date: dt.datetime = Field(description="delete entries strictly older than this (UTC)")
    exclude_actions: list[Name] = Field(
        default_factory=list, max_length=1000, description="actions to keep"
    )
    batch_size: int = Field(default=5000, ge=1, le=10_000, description="entries deleted per transaction")

    @field_validator("before_date")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return _utc_naive(value)


class AuditReport(Payload):
    start_date: dt.datetime = Field(description="period start, inclusive (UTC)")
    end_date: dt.datetime = Field(description="period end, inclusive (UTC)")
    report_type: str | None = Field(default=None, max_length=32)  # echoed back (daily, weekly, ...)
    top: int = Field(default=10, ge=1, le=1000, description="rows in each top list")

    @field_validator("start_date", "end_date")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return _utc_naive(value)

    @model_validator(mode="after")
    def _order(self) -> AuditReport:
        if self.end_date < self.start_date:
            raise ValueError("endDate must not be before startDate")
        return self


def check_event(data: Any) -> LogEvent | str:
    """One event of a bulk job: the validated model, or the error text for its result row."""
    if not isinstance(data, dict):
        return f"event must be a JSON object, got {type(data).__name__}"
    try:
        return LogEvent.model_validate(data)
    except ValidationError as exc:
        problems = [p.removeprefix("payload: ") for p in problems_of(exc, LogEvent)]
        return "; ".join(problems)
