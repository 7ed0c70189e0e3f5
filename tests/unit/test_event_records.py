"""The hot-path event decoder (msgspec) agrees with the pydantic contract on every message.

``validate_event`` reads a message in the contract's plain form with msgspec and leaves anything
else to the pydantic models. These tests check the two halves of that promise on generated
events, on damaged ones, and on the forms where msgspec alone would be more lenient: whatever
msgspec accepts the contract accepts with equal values, and ``validate_event`` returns exactly
what the contract alone would (same event, or same error code and message).
"""

from __future__ import annotations

import gc
import json
import math
from datetime import datetime, timezone
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.event_records import Event, decode_event, from_model
from schemas.events import FLOAT32_MAX, INT32_MAX, INT64_MAX, touchpoint_adapter
from streams.core import validation
from streams.core.validation import Invalid, validate_event
from tests.unit.test_validation_properties import (
    PROPERTY_SETTINGS,
    _mutate,
    json_values,
    valid_events,
)

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


def _contract_only(value: bytes, monkeypatch: pytest.MonkeyPatch) -> Event | Invalid:
    """``validate_event`` with msgspec switched off: every message goes through pydantic."""

    def refuse(_value: bytes) -> Event:
        raise msgspec.DecodeError("switched off")

    with monkeypatch.context() as patch:
        patch.setattr(validation, "decode_event", refuse)
        return validate_event(value, now=NOW)


def _agree(value: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        fast: Event | None = decode_event(value)
    except msgspec.DecodeError:
        fast = None
    if fast is not None:  # msgspec accepted: so does the contract, with the same values
        assert from_model(touchpoint_adapter.validate_json(value)) == fast
    assert validate_event(value, now=NOW) == _contract_only(value, monkeypatch)


@PROPERTY_SETTINGS
@given(valid_events())
def test_valid_events_decode_alike(event: dict[str, Any]) -> None:
    value = orjson.dumps(event)
    expected = from_model(touchpoint_adapter.validate_json(value))
    try:
        assert decode_event(value) == expected
    except msgspec.DecodeError:
        # The one plain form msgspec hands over on purpose: the text "occurred_at" also appears
        # as a value (e.g. customer_id), so the timestamp pre-check cannot find it just once.
        assert value.count(b'"occurred_at"') > 1
        assert validate_event(value, now=NOW) == expected


@PROPERTY_SETTINGS
@given(valid_events())
def test_decoded_events_are_not_tracked_by_the_collector(event: dict[str, Any]) -> None:
    """A fetch decodes thousands of events at a time: untracked, they do not count towards
    the collector's young generation nor get walked by it. They cannot form a cycle (frozen,
    only strings, numbers, datetimes, enum members and their properties)."""
    decoded = validate_event(orjson.dumps(event), now=NOW)
    assert isinstance(decoded, Event)
    assert not gc.is_tracked(decoded) and not gc.is_tracked(decoded.properties)  # type: ignore[attr-defined]


@PROPERTY_SETTINGS
@given(valid_events(), st.data())
def test_damaged_events_get_the_contracts_verdict(
    event: dict[str, Any], data: st.DataObject
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _agree(_mutate(event, data), monkeypatch)


@PROPERTY_SETTINGS
@given(
    valid_events(), st.sampled_from(["properties", "envelope"]), st.text(max_size=12), json_values
)
def test_lax_values_get_the_contracts_verdict(
    event: dict[str, Any], where: str, key: str, value: Any
) -> None:
    """A field of either level replaced by any JSON value (lax forms included)."""
    target = event["properties"] if where == "properties" else event
    target[key if key else (sorted(target) or ["x"])[0]] = value
    with pytest.MonkeyPatch.context() as monkeypatch:
        _agree(json.dumps(event).encode(), monkeypatch)


VALID = {
    "event_id": "e-1", "event_type": "survey_answer", "schema_version": 1,
    "occurred_at": "2026-11-23T10:15:00.123Z", "customer_id": "c-1", "channel": "web",
    "properties": {"survey": "nps", "score": 3},
}
_BASE = orjson.dumps(VALID)[:-1]


@pytest.mark.parametrize(
    "value",
    [
        # msgspec rounds sub-microsecond digits, pydantic truncates them
        orjson.dumps({**VALID, "occurred_at": "2026-11-23T10:15:00.9999999Z"}),
        orjson.dumps({**VALID, "occurred_at": "2026-11-23T10:15:00.123456789+01:00"}),
        # msgspec skips unknown fields without checking their depth or their UTF-8
        _BASE + b',"x":' + b"[" * 220 + b"]" * 220 + b"}",
        _BASE + b',"x":' + b'{"a":' * 220 + b"1" + b"}" * 220 + b"}",
        _BASE + b',"x":"\xff"}',
        _BASE + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        # forms only the contract's lax mode reads, and duplicate keys
        orjson.dumps({**VALID, "occurred_at": "1795446066"}),
        orjson.dumps({**VALID, "occurred_at": "2026-11-23T10:15:00,5Z"}),
        orjson.dumps({**VALID, "occurred_at": "2026-11-23 10:15:00z"}),
        _BASE + b',"occurred_at":"2026-11-23T10:15:00.1234567Z"}',
        _BASE + b',"properties":{"survey":"nps","score":4}}',
        orjson.dumps({**VALID, "event_type": "page_view", "properties": {"url": "u\n"}}),
        orjson.dumps({**VALID, "event_type": "page_view",
                      "properties": {"url": "u", "http_status": 200.0}}),
        orjson.dumps({**VALID, "event_type": "purchase",
                      "properties": {"order_id": "o", "order_value": 1, "currency": "EUR\n"}}),
        orjson.dumps({**VALID, "event_type": "purchase",
                      "properties": {"order_id": "o", "order_value": 40, "currency": "EUR"}}),
        orjson.dumps(VALID).replace(b'"score":3', b'"score":3,"x":1e999'),
        orjson.dumps({**VALID, "event_type": "purchase"}).replace(
            b'{"survey":"nps","score":3}', b'{"order_id":"o","order_value":1e999,"currency":"EUR"}'
        ),
        orjson.dumps({**VALID, "properties": {"survey": "nps", "score": 11}}),
    ],
)
def test_where_msgspec_alone_is_more_lenient(value: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    _agree(value, monkeypatch)


def _with_properties(event_type: str, properties: dict[str, Any]) -> bytes:
    # json, not orjson: the out-of-range integers do not fit orjson's 64 bits.
    event = {**VALID, "event_type": event_type, "properties": properties}
    return json.dumps(event, separators=(",", ":")).encode()


_PAGE = {"url": "https://shop.example.com/"}
_CART = {"cart_id": "c", "cart_value": 1.0, "currency": "EUR"}
_CONTACT = {"contact_id": "t", "reason": "late", "resolved": False}
_ABOVE_FLOAT32 = math.nextafter(FLOAT32_MAX, math.inf)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (_with_properties("page_view", {**_PAGE, "load_time_ms": INT32_MAX}), True),
        (_with_properties("page_view", {**_PAGE, "load_time_ms": INT32_MAX + 1}), False),
        (_with_properties("page_view", {**_PAGE, "load_time_ms": 10**15}), False),
        (_with_properties("cart_abandon", {**_CART, "items": INT64_MAX}), True),
        (_with_properties("cart_abandon", {**_CART, "items": INT64_MAX + 1}), False),
        (_with_properties("cart_abandon", {**_CART, "items": 10**30}), False),
        (_with_properties("support_contact", {**_CONTACT, "wait_s": FLOAT32_MAX}), True),
        (_with_properties("support_contact", {**_CONTACT, "wait_s": _ABOVE_FLOAT32}), False),
        (_with_properties("support_contact", {**_CONTACT, "wait_s": 1e300}), False),
        (_with_properties("support_contact", {**_CONTACT, "wait_s": 10**40}), False),
    ],
)
def test_numeric_bounds_are_the_columns_and_both_decoders_agree(
    value: bytes, valid: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: load_time_ms (Int32), wait_s (Float32) and items (Int64 inside the properties
    JSON) are bounded to what ClickHouse holds; msgspec and pydantic draw the line alike."""
    _agree(value, monkeypatch)
    result = validate_event(value, now=NOW)
    assert (not isinstance(result, Invalid)) is valid, result
    if not valid:
        assert isinstance(result, Invalid) and result.code.value == "schema_violation"
