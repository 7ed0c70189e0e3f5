"""The contract's strict spots: numbers are not times, booleans are not versions, and a survey
score off its scale names the score field."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from streams.core.validation import ErrorCode, Invalid, validate_event

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
VALID = {
    "event_id": "e-1", "event_type": "survey_answer", "schema_version": 1,
    "occurred_at": "2026-11-23T10:15:00.123Z", "customer_id": "c-1", "channel": "web",
    "properties": {"survey": "nps", "score": 3},
}


def _check(**changes: object) -> Invalid:
    result = validate_event(orjson.dumps({**VALID, **changes}), now=NOW)
    assert isinstance(result, Invalid), result
    return result


def test_the_valid_example_is_valid() -> None:
    assert not isinstance(validate_event(orjson.dumps(VALID), now=NOW), Invalid)


@pytest.mark.parametrize("stamp", [1795446066, 1795446066.5])
def test_a_unix_number_is_not_a_timestamp(stamp: float) -> None:
    result = _check(occurred_at=stamp)
    assert result.code is ErrorCode.schema_violation
    assert "occurred_at" in result.message


@pytest.mark.parametrize("version", [True, "1", 1.0])
def test_schema_version_must_be_an_integer(version: object) -> None:
    assert _check(schema_version=version).code in (
        ErrorCode.schema_violation, ErrorCode.unsupported_schema_version
    )


def test_off_scale_score_names_the_score_field() -> None:
    result = _check(properties={"survey": "csat", "score": 6})
    assert result.code is ErrorCode.schema_violation
    assert "properties.score" in result.message and "1-5" in result.message
