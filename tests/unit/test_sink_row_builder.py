"""The sink's row builder: one consumed record to the ClickHouse rows it stands for."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aiokafka import ConsumerRecord

from sinks.config import SinkConfig
from sinks.consumer import RowBuilder
from sinks.rows import ALERTS, DEAD_LETTERS, TABLE_COLUMNS, TOUCHPOINT_EVENTS, as_dict
from streams.core.deadletter import dead_letter_headers
from streams.core.sentiment import VaderAnalyzer
from streams.core.validation import ErrorCode, Invalid
from tests.journeys import build_engine, cart_abandoned, make_event


def _record(topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None,
            offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=1, offset=offset, timestamp=0, timestamp_type=0,
                          key=b"k", value=value, checksum=None, serialized_key_size=1,
                          serialized_value_size=len(value), headers=tuple(headers or ()))


def test_row_builder_maps_each_topic_to_its_table() -> None:
    config = SinkConfig()
    topics = config.topics
    build = RowBuilder(config, VaderAnalyzer())
    now = datetime.now(timezone.utc)
    event = make_event("c-1", "e-1", "survey_answer", now - timedelta(minutes=5),
                       {"survey": "nps", "score": 2, "comment": "Awful, nobody helped me"})
    [(table, row)] = build(_record(topics.touchpoints,
                                   event.model_dump_json(exclude_none=True).encode()), now)
    assert table == TOUCHPOINT_EVENTS
    values = as_dict(table, row)
    assert values["event_id"] == "e-1" and values["score"] == 2
    assert values["sentiment"] is not None and values["sentiment"] < 0

    [(table, row)] = build(_record(topics.touchpoints, b"{not json"), now)
    assert table == DEAD_LETTERS
    assert as_dict(table, row)["code"] == "invalid_json"
    assert as_dict(table, row)["raw"] == b"{not json"

    foreign = _record(topics.dead_letters, b"x", dead_letter_headers(
        Invalid(ErrorCode.schema_violation, "f: bad"), topic="t", partition=0, offset=1,
        received_at=now))
    assert build(foreign, now) == []  # stored from cx.touchpoints already
    own = _record(topics.dead_letters, b"x", dead_letter_headers(
        Invalid(ErrorCode.processing_error, "boom"), topic="t", partition=0, offset=1,
        received_at=now))
    [(table, row)] = build(own, now)
    assert table == DEAD_LETTERS and as_dict(table, row)["code"] == "processing_error"


def test_row_builder_stores_alerts_from_the_alert_topics() -> None:
    config = SinkConfig()
    engine = build_engine()
    state = None
    alerts = []
    for event in cart_abandoned("c-al").events:
        outcome = engine.process(state, "c-al", event, now=datetime.now(timezone.utc))
        state = outcome.state
        alerts.extend(outcome.alerts)
    [alert] = alerts
    build = RowBuilder(config, VaderAnalyzer())
    record = _record(config.topics.alerts_marketing, alert.to_json())
    [(name, row)] = build(record, datetime.now(timezone.utc))
    assert name == ALERTS
    assert as_dict(name, row)["alert_id"] == alert.alert_id
    assert len(row) == len(TABLE_COLUMNS[ALERTS])
