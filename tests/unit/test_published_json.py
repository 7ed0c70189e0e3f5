"""The engine's published JSON (``to_json`` of alerts and score updates) is the pydantic contract.

Alerts and score updates are built on the hot path without pydantic; what they publish must still
validate against ``schemas.alerts.Alert`` / ``schemas.scores.ScoreUpdate`` and read back to the
same values.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.alerts import Alert, AlertKind
from schemas.events import JourneyStage
from schemas.records import (
    AlertRecord,
    ContributionRecord,
    ScoreUpdateRecord,
    decode_alert,
    decode_score_update,
)
from schemas.scores import ScoreUpdate
from streams.core.engine import Engine
from tests.journeys import ALL_JOURNEYS, Journey, build_engine

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return build_engine()


@pytest.mark.parametrize("builder", ALL_JOURNEYS, ids=lambda b: b.__name__)
def test_published_alerts_and_updates_follow_the_contract(
    engine: Engine, builder: Callable[[str], Journey]
) -> None:
    journey = builder("cust-json")
    state = None
    alerts = updates = 0
    for event in journey.events:
        out = engine.process(state, journey.customer_id, event, now=NOW)
        state = out.state
        for alert in out.alerts:
            data = alert.to_json()
            assert decode_alert(data) == alert
            model = Alert.model_validate_json(data)
            assert (model.rule, model.kind) == (alert.rule, alert.kind)
            assert orjson.loads(model.model_dump_json()) == orjson.loads(data)
            alerts += 1
        if out.score_update is not None:
            data = out.score_update.to_json()
            assert decode_score_update(data) == out.score_update
            update = ScoreUpdate.model_validate_json(data)
            assert update.customer_id == journey.customer_id
            assert orjson.loads(update.model_dump_json()) == orjson.loads(data)
            updates += 1
    assert alerts == len(journey.expected_rules)
    assert updates >= 1


# ---------------------------------------------------------------- records vs the pydantic models

UTC = timezone.utc
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# hypothesis takes naive bounds and adds the zone itself
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
contributions = st.builds(
    ContributionRecord,
    st.text(max_size=20),
    st.floats(-100, 100).map(lambda x: round(x, 2)),
    st.text(max_size=40),
)
alerts = st.builds(
    AlertRecord,
    alert_id=st.uuids().map(str),
    rule=st.text(min_size=1, max_size=20),
    kind=st.sampled_from(AlertKind),
    customer_id=st.text(max_size=40),
    event_time=moments,
    emitted_at=moments,
    experience_score=st.floats(0, 100),
    churn_risk=st.floats(0, 1),
    explanation=st.lists(contributions, max_size=5),
    evidence=st.lists(st.text(max_size=40), max_size=10),
    action=st.text(max_size=80),
    context=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
updates = st.builds(
    ScoreUpdateRecord,
    customer_id=st.text(max_size=40),
    experience_score=st.floats(0, 100),
    churn_risk=st.floats(0, 1),
    journey_stage=st.sampled_from(JourneyStage),
    previous_stage=st.none() | st.sampled_from(JourneyStage),
    explanation=st.lists(contributions, max_size=5),
    event_time=moments,
    updated_at=moments,
    clv_12m=st.none() | st.floats(0, 1e9).map(lambda x: round(x, 2)),
)


@given(alerts)
def test_alert_record_json_is_the_pydantic_json(record: AlertRecord) -> None:
    data = record.to_json()
    model = Alert.model_validate_json(data)
    assert model.model_dump_json().encode() == data  # byte for byte
    assert decode_alert(data) == record
    assert AlertRecord.from_payload(record.to_payload(), record.emitted_at) == record


@given(updates)
def test_score_update_record_json_is_the_pydantic_json(record: ScoreUpdateRecord) -> None:
    data = record.to_json()
    model = ScoreUpdate.model_validate_json(data)
    assert model.model_dump_json().encode() == data
    assert decode_score_update(data) == record


def _same_verdict(
    decode: Callable[[bytes], AlertRecord | ScoreUpdateRecord],
    model: type[Alert] | type[ScoreUpdate],
    data: bytes,
) -> None:
    """``decode`` accepts what ``model`` accepts, with the same values, and rejects the rest."""
    try:
        expected = model.model_validate_json(data).model_dump_json().encode()
    except ValueError:
        with pytest.raises(ValueError):
            decode(data)
        return
    assert decode(data).to_json() == expected


@given(
    alerts,
    st.sampled_from(
        ["experience_score", "churn_risk", "kind", "event_time", "evidence", "alert_id", "context"]
    ),
    json_values | st.sampled_from([-1, 101, 1.5, "2024-01-01T00:00:00", "urgent", [1]]),
)
def test_alert_decoder_rejects_what_the_contract_rejects(
    record: AlertRecord, field: str, value: object
) -> None:
    doc = orjson.loads(record.to_json())
    doc[field] = value
    data = orjson.dumps(doc)
    _same_verdict(decode_alert, Alert, data)


@given(
    updates,
    st.sampled_from(["experience_score", "churn_risk", "journey_stage", "previous_stage"]),
    json_values | st.sampled_from([-1, 101, 1.5, "usage", "nowhere"]),
)
def test_score_decoder_rejects_what_the_contract_rejects(
    record: ScoreUpdateRecord, field: str, value: object
) -> None:
    doc = orjson.loads(record.to_json())
    doc[field] = value
    data = orjson.dumps(doc)
    _same_verdict(decode_score_update, ScoreUpdate, data)
