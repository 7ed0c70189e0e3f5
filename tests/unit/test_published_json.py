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

from schemas.alerts import Alert
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
            model = Alert.model_validate_json(data)
            assert (model.rule, model.kind) == (alert.rule, alert.kind)
            assert orjson.loads(model.model_dump_json()) == orjson.loads(data)
            alerts += 1
        if out.score_update is not None:
            data = out.score_update.to_json()
            update = ScoreUpdate.model_validate_json(data)
            assert update.customer_id == journey.customer_id
            assert orjson.loads(update.model_dump_json()) == orjson.loads(data)
            updates += 1
    assert alerts == len(journey.expected_rules)
    assert updates >= 1
