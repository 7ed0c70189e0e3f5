"""Property-based tests: validate_event never raises and classifies every input it rejects."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event_records import Event, from_model
from schemas.events import (
    EVENT_MODELS,
    FLOAT32_MAX,
    INT32_MAX,
    INT64_MAX,
    SURVEY_SCALES,
    Channel,
    JourneyStage,
    touchpoint_adapter,
)
from streams.core.validation import ErrorCode, Invalid, validate_event

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Keys and values of the contract are mixed in so random documents reach the deeper checks.
CONTRACT_KEYS = [
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "customer_id",
    "anonymous_id",
    "channel",
    "journey_stage",
    "properties",
    "survey",
    "score",
    "url",
    "cart_id",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from([*EVENT_MODELS, "web", "nps", "2026-11-23T10:15:00Z", "1999-01-01T00:00Z"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(CONTRACT_KEYS) | st.text(max_size=12), children, max_size=8
        )
    ),
    max_leaves=30,
)

ids = st.text(min_size=1, max_size=40)
money = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
currency = st.sampled_from(["EUR", "USD", "GBP", "JPY"])
short = st.text(max_size=60)

PROPERTIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "page_view": st.fixed_dictionaries(
        {"url": st.text(min_size=1, max_size=100)},
        optional={
            "load_time_ms": st.integers(0, INT32_MAX),  # the Int32 column's maximum
            "http_status": st.integers(100, 599),
            "product_id": ids,
        },
    ),
    "checkout_started": st.fixed_dictionaries(
        {"cart_id": ids}, optional={"cart_value": money, "currency": currency}
    ),
    "cart_abandon": st.fixed_dictionaries(
        {"cart_id": ids, "cart_value": money, "currency": currency},
        optional={"items": st.integers(0, INT64_MAX)},
    ),
    "purchase": st.fixed_dictionaries(
        {"order_id": ids, "order_value": money, "currency": currency}, optional={"cart_id": ids}
    ),
    "payment_failed": st.fixed_dictionaries(
        {}, optional={"cart_id": ids, "order_value": money, "currency": currency, "reason": short}
    ),
    "app_error": st.fixed_dictionaries(
        {"error_code": st.text(min_size=1, max_size=20)},
        optional={"message": short, "screen": short},
    ),
    "support_contact": st.fixed_dictionaries(
        {"contact_id": ids, "reason": st.text(min_size=1, max_size=60), "resolved": st.booleans()},
        optional={"wait_s": st.floats(0, FLOAT32_MAX, allow_nan=False, allow_infinity=False)},
    ),
    "survey_answer": st.sampled_from(sorted(SURVEY_SCALES)).flatmap(
        lambda survey: st.fixed_dictionaries(
            {"survey": st.just(survey), "score": st.integers(*SURVEY_SCALES[survey])},
            optional={"comment": st.text(max_size=200)},
        )
    ),
    "identify": st.fixed_dictionaries({}, optional={"method": short, "email_hash": short}),
}
assert set(PROPERTIES) == set(EVENT_MODELS)

# The bounds are local times (naive, by hypothesis's design), the offsets are added after: at
# -08:00 a local 11:00 was 19:00 UTC, after NOW, and a test that needs a valid event drew a
# future one (found 2026-12-07). 03:00 local is at most 11:00 UTC under any offset here.
occurred_at = st.datetimes(
    min_value=datetime(2000, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive by design
    max_value=datetime(2026, 11, 23, 3, 0),  # noqa: DTZ001
    timezones=st.sampled_from(
        [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(st.sampled_from(sorted(EVENT_MODELS)))
    identity = draw(st.sampled_from(["customer", "anonymous", "both"]))
    event: dict[str, Any] = {
        "event_id": draw(ids),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": draw(occurred_at).isoformat(),
        "channel": draw(st.sampled_from([c.value for c in Channel])),
        "properties": draw(PROPERTIES[event_type]),
    }
    if identity in ("customer", "both"):
        event["customer_id"] = draw(ids)
    if identity in ("anonymous", "both"):
        event["anonymous_id"] = draw(ids)
    optional = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "session_id": ids,
                "touchpoint": st.text(min_size=1, max_size=30),
                "journey_stage": st.sampled_from([s.value for s in JourneyStage]),
                "segment": st.text(min_size=1, max_size=20),
                "timezone": st.sampled_from(["Europe/Berlin", "America/New_York", "UTC"]),
            },
        )
    )
    event.update(optional)
    return event


def assert_classified(result: Event | Invalid) -> None:
    """The contract for any input: a typed event, or a real code with a `field: ...` message."""
    if isinstance(result, Invalid):
        assert isinstance(result.code, ErrorCode)
        assert result.code is not ErrorCode.internal_error, result.message
        field, sep, text = result.message.partition(": ")
        assert sep and field and text, result.message
    else:
        assert isinstance(result, Event)


@PROPERTY_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(value: bytes) -> None:
    assert_classified(validate_event(value, now=NOW))


@PROPERTY_SETTINGS
@given(json_values)
def test_random_json_is_classified_like_the_oracle(document: Any) -> None:
    result = validate_event(json.dumps(document, ensure_ascii=False).encode(), now=NOW)
    assert_classified(result)
    if not isinstance(document, dict):
        assert isinstance(result, Invalid) and result.code is ErrorCode.not_an_object
    elif "event_type" in document:
        event_type = document["event_type"]
        if not (isinstance(event_type, str) and event_type in EVENT_MODELS):
            assert isinstance(result, Invalid) and result.code is ErrorCode.unknown_event_type
    else:
        assert result == Invalid(ErrorCode.schema_violation, "event_type: Field required")


@PROPERTY_SETTINGS
@given(valid_events())
def test_valid_events_round_trip(event: dict[str, Any]) -> None:
    value = orjson.dumps(event)
    result = validate_event(value, now=NOW)
    assert isinstance(result, Event), result
    assert getattr(result, "event_type", None) == event["event_type"]
    assert result.event_id == event["event_id"]
    assert result.occurred_at == datetime.fromisoformat(event["occurred_at"])
    assert result.identity == event.get("customer_id", event.get("anonymous_id"))
    again = validate_event(msgspec.json.encode(result), now=NOW)
    assert again == result
    # the contract reads the same event from the same bytes
    assert from_model(touchpoint_adapter.validate_json(value)) == result


def _mutate(event: dict[str, Any], data: st.DataObject) -> bytes:
    """One random damage: drop, replace or add a field (envelope or properties), or bytes."""
    kind = data.draw(st.sampled_from(["drop", "replace", "add", "prop", "truncate", "flip"]))
    target = event
    if kind == "prop" and isinstance(event.get("properties"), dict) and event["properties"]:
        target = event["properties"]
        kind = data.draw(st.sampled_from(["drop", "replace"]))
    if kind == "drop":
        key = data.draw(st.sampled_from(sorted(target)))
        del target[key]
    elif kind in ("replace", "prop"):
        key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(json_values)
    elif kind == "add":
        target[data.draw(st.text(max_size=12))] = data.draw(json_values)
    # The stdlib encoder: orjson refuses integers beyond 64 bits, which json_values may hold.
    value = json.dumps(event, ensure_ascii=False).encode()
    if kind == "truncate":
        value = value[: data.draw(st.integers(0, len(value) - 1))]
    elif kind == "flip":
        index = data.draw(st.integers(0, len(value) - 1))
        value = value[:index] + bytes([data.draw(st.integers(0, 255))]) + value[index + 1 :]
    return value


@PROPERTY_SETTINGS
@given(valid_events(), st.data())
def test_mutated_valid_events_are_classified(event: dict[str, Any], data: st.DataObject) -> None:
    value = _mutate(event, data)
    result = validate_event(value, now=NOW)
    assert_classified(result)
    if isinstance(result, Invalid) and result.code is ErrorCode.schema_violation:
        # Nothing the pipeline calls a schema violation is accepted by the models themselves.
        try:
            touchpoint_adapter.validate_json(value)
        except ValueError:
            pass
        else:
            raise AssertionError(f"the model accepts {value!r}")


@PROPERTY_SETTINGS
@given(
    delta_s=st.floats(min_value=-3 * 86400, max_value=3 * 86400, allow_nan=False),
    offset_min=st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    now_offset_min=st.sampled_from([0, 0, 90, -300]),
    skew_s=st.sampled_from([0.0, 1.5, 3600.0, 86400.0, 86401.0, 2.5 * 86400]),
)
def test_future_bound_is_exact_in_every_zone(
    delta_s: float, offset_min: int, now_offset_min: int, skew_s: float
) -> None:
    # The validator skips the exact comparison when it can prove the event is early enough;
    # this checks the shortcut against the plain definition for offsets up to +-23:59.
    now_zone = timezone.utc if now_offset_min == 0 else timezone(timedelta(minutes=now_offset_min))
    now = NOW.astimezone(now_zone)
    occurred = (NOW + timedelta(seconds=delta_s)).astimezone(
        timezone(timedelta(minutes=offset_min))
    )
    event = {
        "event_id": "e-1",
        "event_type": "identify",
        "schema_version": 1,
        "occurred_at": occurred.isoformat(),
        "customer_id": "c-1",
        "channel": "web",
    }
    result = validate_event(orjson.dumps(event), now=now, max_future_skew_s=skew_s)
    too_late = occurred > now + timedelta(seconds=skew_s)
    if too_late:
        assert isinstance(result, Invalid) and result.code is ErrorCode.future_timestamp
    else:
        assert isinstance(result, Event), result
