"""The sink's row builder: one consumed record to the ClickHouse rows it stands for."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
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


def test_a_rejected_row_becomes_a_sink_dead_letter_with_its_record_and_the_error() -> None:
    from sinks.clickhouse import Rejected
    from sinks.consumer import sink_dead_letter
    from streams.core.deadletter import parse_dead_letter_headers

    original = [("trace-id", b"t-1"), ("cx-error-code", b"processing_error")]
    record = _record("cx.alerts.support", b'{"alert_id":"a"}', original, offset=42)
    now = datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)
    key, value, headers = sink_dead_letter(
        record, Rejected(ALERTS, 3, 321, "column event_time: -1 is outside DateTime"),
        received_at=now)
    assert (key, value) == (b"k", b'{"alert_id":"a"}')
    found = dict(headers)
    assert found["trace-id"] == b"t-1"  # the record's own headers stay, the pipeline's go
    assert found["cx-error-code"] == b"clickhouse_rejected"
    assert found["cx-sink-table"] == b"alerts" and found["cx-clickhouse-code"] == b"321"
    info = parse_dead_letter_headers(headers)
    assert (info.source_topic, info.source_partition, info.source_offset) == (
        "cx.alerts.support", 1, 42)
    assert info.message is not None and "event_time" in info.message
    assert info.received_at == now


def test_a_stuck_dependency_logs_rarely_and_health_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from sinks.consumer import STUCK_LOG_EVERY_S, Stuck
    from streams.health import Health

    clock = [0.0]
    health = Health()
    stuck = Stuck("clickhouse", health, clock=lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="sinks.consumer"):
        for _ in range(600):  # ten minutes of attempts one second apart
            stuck.failed("cannot connect to ClickHouse: refused", 1.0)
            clock[0] += 1.0
        assert health.problems() == {"clickhouse": "cannot connect to ClickHouse: refused"}
        stuck.ok()
    lines = [r for r in caplog.records if r.name == "sinks.consumer"]
    assert len(lines) == 600 // STUCK_LOG_EVERY_S + 1
    assert "stuck for 0s" in lines[0].getMessage()
    assert "is back after 600s" in lines[-1].getMessage()
    assert health.ok


def test_a_score_tombstone_an_erase_wrote_becomes_no_row() -> None:
    config = SinkConfig()
    build = RowBuilder(config, VaderAnalyzer())
    tombstone = ConsumerRecord(topic=config.topics.scores, partition=0, offset=3, timestamp=0,
                               timestamp_type=0, key=b"c-1", value=None, checksum=None,
                               serialized_key_size=3, serialized_value_size=-1, headers=())
    assert build(tombstone, datetime.now(timezone.utc)) == []


@pytest.mark.parametrize("comment", ["", "   ", "\t\n", "\u2003"])
def test_a_blank_comment_is_not_scored_by_the_sink_nor_the_engine(comment: str) -> None:
    """A comment that is empty or only whitespace is no comment for either process: the row
    says ``has_sentiment`` 0, and the engine adds no comment signal."""
    config = SinkConfig()
    build = RowBuilder(config, VaderAnalyzer())
    now = datetime.now(timezone.utc)
    properties = {"survey": "nps", "score": 9, "comment": comment}
    event = make_event("c-1", "e-1", "survey_answer", now - timedelta(minutes=5), properties)
    [(table, row)] = build(_record(config.topics.touchpoints,
                                   event.model_dump_json(exclude_none=True).encode()), now)
    values = as_dict(table, row)
    assert (values["has_sentiment"], values["sentiment"]) == (0, 0.0)
    signals = build_engine().process(None, "c-1", event, now=now).state.signals
    assert not [name for _t, _w, name, _id in signals.records() if name.endswith("_comment")]


def test_a_real_comment_is_scored_by_both() -> None:
    config = SinkConfig()
    build = RowBuilder(config, VaderAnalyzer())
    now = datetime.now(timezone.utc)
    properties = {"survey": "nps", "score": 2, "comment": "  Awful, nobody helped me  "}
    event = make_event("c-1", "e-1", "survey_answer", now - timedelta(minutes=5), properties)
    [(table, row)] = build(_record(config.topics.touchpoints,
                                   event.model_dump_json(exclude_none=True).encode()), now)
    values = as_dict(table, row)
    assert values["has_sentiment"] == 1 and values["sentiment"] < -0.05
    signals = build_engine().process(None, "c-1", event, now=now).state.signals
    assert "negative_comment" in [name for _t, _w, name, _id in signals.records()]
