"""Poison pills on the worker's input: an oversize event that reached the broker compressed,
and events stamped ahead of the wall clock. Neither may halt anything or silence a customer."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import orjson

from streams.core.deadletter import original_value
from tests.integration.conftest import Stack, WorkerProcess, consume_all, json_value
from tests.integration.services import wait_until
from tests.journeys import make_event


def _json(customer: str, event_id: str, event_type: str, at: datetime,
          properties: dict[str, object] | None = None) -> bytes:
    event = make_event(customer, event_id, event_type, at, properties)
    return json.dumps(event.model_dump(mode="json", exclude_none=True)).encode()


def _publish(stack: Stack, messages: list[tuple[bytes, bytes]], **config: object) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=stack.endpoints.kafka_bootstrap, acks="all",
                             **config)
    try:
        for key, value in messages:
            producer.send(stack.settings().topic_touchpoints, key=key, value=value).get(30)
    finally:
        producer.close()



def _alerts(stack: Stack, expect: int) -> list[dict[str, object]]:
    topic = stack.settings().topic_alerts_support
    return [json_value(r)
            for r in consume_all(stack.endpoints.kafka_bootstrap, topic, expect=expect,
                                 timeout_s=60, settle_s=2)]


def test_a_4_mb_event_sent_compressed_is_dead_lettered_whole_and_alerts_keep_flowing(
    stack: Stack, start_worker: Callable[..., WorkerProcess]
) -> None:
    now = datetime.now(timezone.utc)
    worker = start_worker()
    big = orjson.dumps({**orjson.loads(_json("big", "e-big", "page_view", now, {"url": "/"})),
                        "padding": "ab" * 2_000_000})
    assert len(big) > 4_000_000 and len(gzip.compress(big)) < 100_000
    # gzip on the wire: the broker accepts it, although the event is 4 MB.
    _publish(stack, [(b"big", big)], compression_type="gzip", max_request_size=8 * 1024 * 1024)
    _publish(stack, [(b"after", _json("after", "e-nps", "survey_answer", now,
                                      {"survey": "nps", "score": 1}))])
    alerts = _alerts(stack, expect=1)
    assert [(a["customer_id"], a["rule"]) for a in alerts] == [("after", "detractor_follow_up")]
    letters = consume_all(stack.endpoints.kafka_bootstrap, stack.settings().topic_dlq,
                          expect=1, timeout_s=30)
    assert len(letters) == 1
    letter = letters[0]
    headers = dict(letter.headers)
    assert headers["cx-error-code"] == b"too_large"
    assert headers["cx-value-encoding"] == b"gzip"
    assert original_value(letter.value, letter.headers) == big
    assert worker.metric("cx_batch_retries_total") == 0


def test_a_clock_20_h_ahead_is_dead_lettered_and_never_makes_real_events_late(
    stack: Stack, start_worker: Callable[..., WorkerProcess]
) -> None:
    now = datetime.now(timezone.utc)
    worker = start_worker(CX_GRACE_S="60")
    key = b"skewed"
    _publish(stack, [
        # a device whose clock runs 20 h fast, then the same customer's real events
        (key, _json("skewed", "e-future", "page_view", now + timedelta(hours=20), {"url": "/"})),
        (key, _json("skewed", "e-1", "page_view", now, {"url": "/a"})),
        (key, _json("skewed", "e-2", "page_view", now + timedelta(seconds=1), {"url": "/b"})),
        (key, _json("skewed", "e-3", "survey_answer", now + timedelta(seconds=2),
                    {"survey": "nps", "score": 1})),
        # within the allowed skew (4 min ahead): accepted, but scored at receipt
        (b"fast", _json("fast", "f-1", "page_view", now + timedelta(minutes=4), {"url": "/"})),
        (b"fast", _json("fast", "f-2", "survey_answer", now + timedelta(seconds=3),
                        {"survey": "nps", "score": 0})),
    ])
    alerts = _alerts(stack, expect=2)
    assert sorted((a["customer_id"], a["rule"]) for a in alerts) == [
        ("fast", "detractor_follow_up"), ("skewed", "detractor_follow_up")]
    wait_until(lambda: worker.metric("cx_events_processed_total") >= 5, 30,
               "the five accepted events to be scored")
    assert worker.metric("cx_late_events_dropped_total") == 0
    letters = consume_all(stack.endpoints.kafka_bootstrap, stack.settings().topic_dlq,
                          expect=1, timeout_s=30, settle_s=1)
    assert [dict(r.headers)["cx-error-code"] for r in letters] == [
        b"future_timestamp"]
