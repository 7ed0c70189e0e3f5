"""validate_event: every error code with a precise example, and messages that name the field."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from schemas.event_records import Event, SurveyAnswerEvent
from schemas.events import EVENT_TYPES
from streams.core.validation import ErrorCode, Invalid, validate_event

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def survey(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "0b6c2a9e-5d1f-4a63-9a51-1c1f0f3e8d20",
        "event_type": "survey_answer",
        "schema_version": 1,
        "occurred_at": "2026-11-23T10:15:00.123Z",
        "customer_id": "c-1042",
        "anonymous_id": None,
        "channel": "web",
        "properties": {"survey": "nps", "score": 3, "comment": "Payment failed twice"},
    }
    event.update(overrides)
    return event


def encode(event: Any) -> bytes:
    return json.dumps(event).encode()


def invalid(value: bytes | None, **kwargs: Any) -> Invalid:
    result = validate_event(value, now=NOW, **kwargs)
    assert isinstance(result, Invalid), f"expected a rejection, got {result!r}"
    return result


def test_valid_event_is_typed_and_keeps_its_fields() -> None:
    result = validate_event(encode(survey()), now=NOW)
    assert isinstance(result, SurveyAnswerEvent)
    assert result.properties.score == 3
    assert result.identity == "c-1042"
    assert result.occurred_at == datetime(2026, 11, 23, 10, 15, 0, 123000, tzinfo=timezone.utc)


def test_anonymous_only_event_is_valid() -> None:
    result = validate_event(encode(survey(customer_id=None, anonymous_id="a-1")), now=NOW)
    assert isinstance(result, Event)
    assert result.identity == "a-1"


def test_unknown_extra_fields_are_ignored() -> None:
    event = survey(future_field={"x": 1})
    event["properties"]["new_prop"] = True
    assert isinstance(validate_event(encode(event), now=NOW), SurveyAnswerEvent)


@pytest.mark.parametrize("value", [None, b""])
def test_empty_value_is_invalid_json(value: bytes | None) -> None:
    result = invalid(value)
    assert result.code is ErrorCode.invalid_json
    assert result.message == "value: empty message"


def test_syntax_error_is_invalid_json_with_position() -> None:
    result = invalid(b'{"event_id": ')
    assert result.code is ErrorCode.invalid_json
    assert result.message.startswith("value: ")
    assert "line 1" in result.message


def test_lone_surrogate_escape_is_invalid_json() -> None:
    value = encode(survey()).replace(b"Payment failed twice", b"\\ud800")
    assert invalid(value).code is ErrorCode.invalid_json


def test_nesting_beyond_the_parser_limit_is_invalid_json() -> None:
    value = b'{"a": ' + b"[" * 400 + b"]" * 400 + b"}"
    result = invalid(value)
    assert result.code is ErrorCode.invalid_json
    assert "recursion" in result.message


def test_invalid_utf8_names_the_byte_and_offset() -> None:
    value = b'{"event_id": "\xff"}'
    result = invalid(value)
    assert result.code is ErrorCode.invalid_utf8
    assert result.message == "value: invalid UTF-8 byte 0xff at offset 14"


def test_utf8_encoded_surrogate_is_invalid_utf8() -> None:
    # CESU-style bytes of U+D800: Python's strict UTF-8 decoder rejects them, as Kafka readers do.
    value = encode(survey()).replace(b"Payment", b"\xed\xa0\x80")
    assert invalid(value).code is ErrorCode.invalid_utf8


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"text"', "a string"),
        (b"42", "a number"),
        (b"4.2", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_top_level_non_object_is_not_an_object(value: bytes, kind: str) -> None:
    result = invalid(value)
    assert result.code is ErrorCode.not_an_object
    assert result.message == f"value: expected a JSON object, got {kind}"


@pytest.mark.parametrize("event_type", ["signup", "PAGE_VIEW", "", 5, None, ["page_view"]])
def test_unknown_event_type(event_type: Any) -> None:
    result = invalid(encode(survey(event_type=event_type)))
    assert result.code is ErrorCode.unknown_event_type
    assert result.message.startswith(f"event_type: {event_type!r} is not one of ")
    assert all(name in result.message for name in EVENT_TYPES)


def test_missing_event_type_is_a_schema_violation() -> None:
    event = survey()
    del event["event_type"]
    result = invalid(encode(event))
    assert result == Invalid(ErrorCode.schema_violation, "event_type: Field required")


def test_unsupported_schema_version_of_a_valid_v1_shape() -> None:
    result = invalid(encode(survey(schema_version=2)))
    assert result.code is ErrorCode.unsupported_schema_version
    assert result.message == "schema_version: 2 is not supported (supported: 1)"


def test_unsupported_schema_version_wins_over_a_shape_from_that_version() -> None:
    # A v2 producer may have renamed fields: the version is the useful diagnosis, not the shape.
    event = survey(schema_version=2, properties={"kind": "nps", "value": 3})
    assert invalid(encode(event)).code is ErrorCode.unsupported_schema_version


def test_boolean_schema_version_is_not_read_as_a_version() -> None:
    event = survey(schema_version=True, channel="fax")
    assert invalid(encode(event)).code is ErrorCode.schema_violation


def test_score_outside_the_scale_names_properties_and_score() -> None:
    result = invalid(encode(survey(properties={"survey": "nps", "score": 11})))
    assert result.code is ErrorCode.schema_violation
    assert result.message.startswith("properties")
    assert "score 11 is outside the nps scale 0-10" in result.message
    assert "Value error" not in result.message


def test_missing_required_property_names_its_path() -> None:
    event = survey(event_type="page_view", properties={"load_time_ms": 10})
    result = invalid(encode(event))
    assert result == Invalid(ErrorCode.schema_violation, "properties.url: Field required")


def test_wrong_enum_value_names_the_field() -> None:
    result = invalid(encode(survey(channel="fax")))
    assert result.code is ErrorCode.schema_violation
    assert result.message.startswith("channel: Input should be 'web'")


def test_naive_occurred_at_is_a_schema_violation() -> None:
    result = invalid(encode(survey(occurred_at="2026-11-23T10:15:00")))
    assert result == Invalid(
        ErrorCode.schema_violation, "occurred_at: Input should have timezone info"
    )


def test_many_errors_list_three_and_count_the_rest() -> None:
    event = {"event_type": "purchase", "properties": {}}
    result = invalid(encode(event))
    assert result.code is ErrorCode.schema_violation
    parts = result.message.split("; ")
    assert len(parts) == 4
    assert parts[0] == "event_id: Field required"
    assert parts[-1].startswith("and ") and parts[-1].endswith(" more")


def test_empty_customer_id_is_a_schema_violation_not_missing_identity() -> None:
    result = invalid(encode(survey(customer_id="")))
    assert result.code is ErrorCode.schema_violation
    assert result.message.startswith("customer_id: ")


@pytest.mark.parametrize("ids", [{}, {"customer_id": None, "anonymous_id": None}])
def test_missing_identity(ids: dict[str, Any]) -> None:
    event = survey()
    del event["customer_id"], event["anonymous_id"]
    event.update(ids)
    result = invalid(encode(event))
    assert result.code is ErrorCode.missing_identity
    assert "customer_id" in result.message and "anonymous_id" in result.message


def test_before_2000_is_a_bad_timestamp() -> None:
    result = invalid(encode(survey(occurred_at="1999-12-31T23:59:59Z")))
    assert result.code is ErrorCode.bad_timestamp
    assert result.message == "occurred_at: 1999-12-31T23:59:59+00:00 is before 2000-01-01"


def test_lower_bound_is_compared_in_utc() -> None:
    # 2000-01-01T00:30+01:00 is 1999-12-31T23:30Z, before the bound; 23:30-01:00 is after it.
    early = invalid(encode(survey(occurred_at="2000-01-01T00:30:00+01:00")))
    assert early.code is ErrorCode.bad_timestamp
    late = validate_event(encode(survey(occurred_at="1999-12-31T23:30:00-01:00")), now=NOW)
    assert isinstance(late, Event)


def test_future_skew_bound_is_inclusive() -> None:
    at_limit = (NOW + timedelta(minutes=5)).isoformat()
    assert isinstance(validate_event(encode(survey(occurred_at=at_limit)), now=NOW), Event)
    beyond = (NOW + timedelta(minutes=5, milliseconds=1)).isoformat()
    result = invalid(encode(survey(occurred_at=beyond)))
    assert result.code is ErrorCode.future_timestamp
    assert result.message.startswith("occurred_at: ")
    assert "300 s after the receive time 2026-11-23T12:00:00+00:00" in result.message


def test_a_lagging_reader_judges_the_skew_by_the_brokers_append_time() -> None:
    """The sink catching up an hour late must reject what the worker rejected on time."""
    ahead = encode(survey(occurred_at=(NOW + timedelta(minutes=10)).isoformat()))
    appended_ms = int(NOW.timestamp() * 1000)
    an_hour_later = NOW + timedelta(hours=1)
    assert isinstance(validate_event(ahead, now=an_hour_later), Event)
    late_reader = validate_event(ahead, now=an_hour_later, record_ts_ms=appended_ms)
    assert isinstance(late_reader, Invalid)
    assert late_reader.code is ErrorCode.future_timestamp
    assert "receive time 2026-11-23T12:00:00+00:00" in late_reader.message
    # a broker clock ahead of the reader's changes nothing: the earlier of the two counts
    on_time = encode(survey(occurred_at=(NOW + timedelta(minutes=4)).isoformat()))
    assert isinstance(validate_event(on_time, now=NOW, record_ts_ms=appended_ms + 3_600_000),
                      Event)


def test_future_skew_is_configurable_and_offsets_count() -> None:
    # 13:30+01:00 is 12:30Z: 30 minutes after NOW.
    value = encode(survey(occurred_at="2026-11-23T13:30:00+01:00"))
    assert invalid(value, max_future_skew_s=600).code is ErrorCode.future_timestamp
    assert isinstance(validate_event(value, now=NOW, max_future_skew_s=3600), Event)


def test_too_large_is_checked_before_parsing() -> None:
    value = b"\xff" * 2048  # would be invalid_utf8 if it were parsed
    result = invalid(value, max_bytes=1024)
    assert result == Invalid(
        ErrorCode.too_large, "value: 2048 bytes exceeds the limit of 1024 bytes"
    )


def test_default_size_limit_is_one_mebibyte() -> None:
    event = survey()
    event["pad"] = ""
    base = len(encode(event))
    event["pad"] = "x" * ((1 << 20) - base)
    value = encode(event)
    assert len(value) == 1 << 20
    assert isinstance(validate_event(value, now=NOW), Event)
    event["pad"] += "x"
    assert invalid(encode(event)).code is ErrorCode.too_large


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_event(encode(survey()), now=datetime(2026, 11, 23))  # noqa: DTZ001


def test_error_code_values_match_their_names() -> None:
    assert {code.name for code in ErrorCode} >= {
        "invalid_json",
        "not_an_object",
        "unknown_event_type",
        "unsupported_schema_version",
        "schema_violation",
        "missing_identity",
        "bad_timestamp",
        "future_timestamp",
        "too_large",
        "invalid_utf8",
    }
    assert all(code.value == code.name for code in ErrorCode)
