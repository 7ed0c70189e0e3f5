"""Issue 13, poison pills for the sink, against the real broker and the real ClickHouse 18.16: a
value a column cannot hold, a batch spanning 120 months, a record whose row ClickHouse refuses.
Nothing halts: every other row lands, the refused row is in the sink dead-letter topic with the
error and its original value, and the committed offsets reach the end of every topic.

On the code before issue 13 the first of these (``load_time_ms`` = 10^15) made every insert fail
with TypeMismatchError, retried forever: nothing after it reached ClickHouse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tests.integration.conftest import (
    Stack,
    WorkerProcess,
    clickhouse_client,
    consume_all,
    publish,
)
from tests.integration.services import wait_until

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _event(event_id: str, occurred_at: datetime, event_type: str = "page_view",
           properties: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    event = {
        "event_id": event_id, "event_type": event_type, "schema_version": 1,
        "occurred_at": occurred_at.isoformat(), "customer_id": f"c-{event_id}",
        "channel": "web", "properties": properties or {"url": "https://shop.example.com/"},
    }
    # json, not orjson: 10**15 fits orjson, but keep one encoder for all the poison values.
    return f"c-{event_id}".encode(), json.dumps(event).encode()


def _alert(alert_id: str, event_time: datetime) -> tuple[bytes, bytes]:
    alert = {
        "alert_id": alert_id, "rule": "foreign_rule", "kind": "support", "customer_id": "c-x",
        "event_time": event_time.isoformat(), "emitted_at": NOW.isoformat(),
        "experience_score": 40.0, "churn_risk": 0.5, "action": "call", "evidence": ["e"],
    }
    return b"c-x", json.dumps(alert).encode()



def _committed_to_the_end(stack: Stack, topics: list[str]) -> bool:
    consumer = KafkaConsumer(bootstrap_servers=stack.endpoints.kafka_bootstrap,
                             group_id=f"it-{stack.run_id}-store", enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in consumer.partitions_for_topic(t) or ()]
        ends = consumer.end_offsets(partitions)
        return all((consumer.committed(tp) or 0) == ends[tp] for tp in partitions)
    finally:
        consumer.close()


def test_poison_values_and_rows_never_halt_the_sink(
    stack: Stack, start_sink: Callable[..., WorkerProcess]
) -> None:
    settings = stack.settings()
    sink = start_sink()
    before = [_event(f"a{n}", NOW - timedelta(minutes=n)) for n in range(50)]
    poison = [
        _event("huge-load", NOW, properties={"url": "/", "load_time_ms": 10**15}),
        _event("huge-wait", NOW, "support_contact",
               {"contact_id": "t", "reason": "late", "resolved": False, "wait_s": 1e300}),
    ]
    months = [_event(f"m{n}", datetime(2016 + n // 12, n % 12 + 1, 10, tzinfo=timezone.utc))
              for n in range(120)]
    after = [_event(f"z{n}", NOW - timedelta(seconds=n)) for n in range(50)]
    publish(stack.endpoints.kafka_bootstrap, settings.topic_touchpoints,
            before + poison + months + after)
    refused_key, refused_value = _alert("foreign-1960", datetime(1960, 1, 1, tzinfo=timezone.utc))
    publish(stack.endpoints.kafka_bootstrap, settings.topic_alerts_support,
            [(refused_key, refused_value), _alert("fine", NOW)])

    client = clickhouse_client(stack)
    expected = len(before) + len(months) + len(after)

    def landed() -> bool:
        return int(client.execute("SELECT uniqExact(event_id) FROM touchpoint_events")[0][0]) \
            >= expected

    wait_until(landed, 90, f"{expected} events in ClickHouse past the poison")
    assert client.execute(
        "SELECT count(), uniqExact(toYYYYMM(occurred_at)) FROM touchpoint_events FINAL "
        "WHERE event_id LIKE 'm%'") == [(120, 120)]
    # The contract bounds the values to the columns: the poison is a validation dead letter.
    wait_until(lambda: client.execute("SELECT count() FROM dead_letters FINAL")[0][0] >= 2, 30,
               "the two out-of-range events as dead letters")
    letters = client.execute("SELECT code, message FROM dead_letters FINAL ORDER BY message")
    assert [code for code, _ in letters] == ["schema_violation", "schema_violation"]
    assert "load_time_ms" in letters[0][1] and "wait_s" in letters[1][1]
    wait_until(lambda: client.execute("SELECT count() FROM alerts")[0][0] >= 1, 30,
               "the good alert")
    assert client.execute("SELECT alert_id FROM alerts FINAL") == [("fine",)]

    # The alert of 1960 cannot be a DateTime: it is in the sink dead-letter topic, unchanged.
    (letter,) = consume_all(stack.endpoints.kafka_bootstrap, settings.topic_sink_dlq, expect=1,
                            timeout_s=30, settle_s=1)
    assert letter.value == refused_value and letter.key == refused_key
    headers = dict(letter.headers)
    assert headers["cx-error-code"] == b"clickhouse_rejected"
    assert headers["cx-sink-table"] == b"alerts" and headers["cx-clickhouse-code"] == b"321"
    assert headers["cx-source-topic"] == settings.topic_alerts_support.encode()
    assert headers["cx-source-offset"] == b"0"
    assert b"event_time" in headers["cx-error-message"]
    assert sink.metric("cx_sink_dead_lettered_rows_total", 'code="321"', 'table="alerts"') == 1

    topics = [settings.topic_touchpoints, settings.topic_alerts_support]
    wait_until(lambda: _committed_to_the_end(stack, topics), 30,
               "the sink to commit every offset, the poison's included")
    assert sink.proc.poll() is None
    assert "Traceback" not in sink.log()
