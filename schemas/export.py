"""Export the event contract as JSON Schema (draft 2020-12) for upstream producers.

The schemas are generated from the pydantic models in :mod:`schemas.events`, so they cannot drift
from what the pipeline accepts; the copies committed under ``schemas/json/`` are checked against a
fresh export by the test suite. Rules that pydantic validators enforce in code (the survey score
scale, "customer_id or anonymous_id") are added here as JSON Schema keywords so producers can check
them too. Two rules depend on the receive time and stay in the descriptions only: ``occurred_at``
must not be before 2000-01-01 nor more than 24 h after the event is received.

Output is deterministic: sorted keys, two-space indent, UTF-8, trailing newline.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from schemas.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    MAX_COMMENT_CHARS,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    SURVEY_SCALES,
    EventBase,
    touchpoint_adapter,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).resolve().parent / "json"
ENVELOPE_FILE = "envelope.schema.json"
TOUCHPOINT_FILE = "touchpoint.schema.json"

EVENT_DESCRIPTIONS: dict[str, str] = {
    "page_view": "A page or screen was shown. Journey stage: consideration when it names a "
    "product, else awareness. Slow loads and 4xx/5xx statuses count as friction.",
    "checkout_started": "The customer opened the checkout for a cart (stage: purchase).",
    "cart_abandon": "A cart was left without a purchase (stage: purchase); a later purchase "
    "with the same cart_id recovers it.",
    "purchase": "An order was placed (stage: purchase); cart_id links it to an earlier cart.",
    "payment_failed": "A payment attempt failed (stage: purchase); a moment-of-truth friction.",
    "app_error": "The app or site showed an error to the customer (stage: usage).",
    "support_contact": "The customer contacted support (stage: usage); resolved=false and "
    "repeated contacts are pain points.",
    "survey_answer": "An answer to an NPS (0-10), CSAT (1-5) or CES (1-7, 7 = least effort) "
    f"survey (stage: loyalty), with an optional comment of at most {MAX_COMMENT_CHARS} "
    "characters.",
    "identify": "The customer was identified (login, sign-up; stage: awareness). Sent with "
    "both customer_id and anonymous_id it links the anonymous history to the customer.",
}

# Used where the model itself gives no description; a Field(description=...) in the model wins.
ENVELOPE_FIELD_DESCRIPTIONS: dict[str, str] = {
    "event_id": "Unique id of the event, the idempotency key (a UUID is recommended). "
    "Duplicates are processed once.",
    "event_type": "What happened; selects the shape of `properties`.",
    "schema_version": "Version of this contract the producer wrote. Supported: "
    + ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
    + ".",
    "occurred_at": "When it happened: RFC 3339 with a zone, e.g. 2026-11-23T10:15:00.123Z. "
    "Not before 2000-01-01 nor more than 24 h after the pipeline receives it.",
    "customer_id": "Known customer. At least one of customer_id and anonymous_id is required; "
    "the Kafka key is customer_id, else anonymous_id.",
    "anonymous_id": "Device or cookie id before the customer is known. An event with both ids "
    "links them (identity stitching).",
    "session_id": "Session the event belongs to.",
    "channel": "Channel of the touchpoint.",
    "touchpoint": "Concrete place of interaction, e.g. checkout, product_page, hotline.",
    "journey_stage": "Journey stage; derived from the event type when absent (see docs/events.md).",
    "segment": "Customer segment, e.g. vip, new.",
    "timezone": "The customer's IANA time zone, e.g. Europe/Berlin (used for quiet hours).",
    "properties": "Fields specific to the event type.",
}

_IDENTITY_RULE: dict[str, Any] = {
    "anyOf": [
        {"required": [field], "properties": {field: {"type": "string"}}}
        for field in ("customer_id", "anonymous_id")
    ]
}


def schema_id(name: str) -> str:
    """The ``$id`` of a published schema: a URN naming the contract version and the schema."""
    return f"urn:cxsignals:schema:touchpoint:v{SCHEMA_VERSION}:{name}"


def build_json_schemas() -> dict[str, dict[str, Any]]:
    """Every published schema by file name: one per event type, the envelope, and the union."""
    schemas = {f"{event_type}.schema.json": _event_schema(event_type) for event_type in EVENT_TYPES}
    schemas[ENVELOPE_FILE] = _envelope_schema()
    schemas[TOUCHPOINT_FILE] = _touchpoint_schema()
    return schemas


def render_json_schema(schema: dict[str, Any]) -> str:
    """The deterministic text of one schema file."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_json_schemas(directory: Path) -> list[Path]:
    """Write every schema of :func:`build_json_schemas` into ``directory`` (created if missing).

    Overwrites files of the same name and leaves other files alone. Returns the written paths,
    sorted. Raises ``OSError`` when the directory cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, schema in sorted(build_json_schemas().items()):
        path = directory / file_name
        path.write_text(render_json_schema(schema), encoding="utf-8", newline="\n")
        written.append(path)
    return written


def _event_schema(event_type: str) -> dict[str, Any]:
    schema = EVENT_MODELS[event_type].model_json_schema()
    _describe_envelope_fields(schema["properties"])
    _add_survey_scales(schema.get("$defs", {}))
    return _published(
        schema,
        name=event_type,
        title=f"CX Signals touchpoint event: {event_type}",
        description=EVENT_DESCRIPTIONS[event_type],
    )


def _envelope_schema() -> dict[str, Any]:
    schema = EventBase.model_json_schema()
    schema["properties"]["event_type"] = {"enum": list(EVENT_TYPES), "type": "string"}
    schema["properties"]["properties"] = {"type": "object"}
    schema["required"] = sorted({*schema.get("required", []), "event_type"})
    _describe_envelope_fields(schema["properties"])
    return _published(
        schema,
        name="envelope",
        title="CX Signals touchpoint event envelope",
        description="The fields every touchpoint event carries; `properties` depends on "
        "`event_type` (see the per-type schemas). Unknown extra fields are accepted and ignored.",
    )


def _touchpoint_schema() -> dict[str, Any]:
    schema = touchpoint_adapter.json_schema()
    defs = schema.get("$defs", {})
    for event_model in EVENT_MODELS.values():
        model_schema = defs.get(event_model.__name__)
        if model_schema is not None:
            _describe_envelope_fields(model_schema["properties"])
    _add_survey_scales(defs)
    return _published(
        schema,
        name="touchpoint",
        title="CX Signals touchpoint event (any type)",
        description="One message on the touchpoints topic: exactly one of the event types, "
        "selected by `event_type`.",
    )


def _published(
    schema: dict[str, Any], *, name: str, title: str, description: str
) -> dict[str, Any]:
    schema.update(
        {
            "$schema": DIALECT,
            "$id": schema_id(name),
            "title": title,
            "description": description,
            **copy.deepcopy(_IDENTITY_RULE),
        }
    )
    return schema


def _describe_envelope_fields(properties: dict[str, Any]) -> None:
    for field, text in ENVELOPE_FIELD_DESCRIPTIONS.items():
        if field in properties:
            properties[field].setdefault("description", text)


def _add_survey_scales(defs: dict[str, Any]) -> None:
    """The score range per survey, which the model checks in a validator, as if/then rules."""
    props = defs.get("SurveyAnswerProps")
    if props is None:
        return
    props["allOf"] = [
        {
            "if": {"properties": {"survey": {"const": survey}}, "required": ["survey"]},
            "then": {"properties": {"score": {"minimum": low, "maximum": high}}},
        }
        for survey, (low, high) in sorted(SURVEY_SCALES.items())
    ]
    props["properties"]["score"].setdefault(
        "description",
        "; ".join(f"{survey}: {low}-{high}" for survey, (low, high) in SURVEY_SCALES.items()),
    )
