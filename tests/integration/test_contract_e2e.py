"""Issue 3 end to end: a mix of valid and bad messages through the real broker and worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import orjson

from cxsignals.simulator.journeys import SimConfig, SimMessage, generate
from streams.core.deadletter import original_value, parse_dead_letter_headers
from tests.integration.conftest import (
    Stack,
    WorkerProcess,
    clickhouse_client,
    consume_all,
    publish,
)
from tests.integration.services import wait_until


def test_bad_messages_reach_the_dlq_unchanged_and_valid_ones_are_consumed(
    stack: Stack, start_worker: Callable[..., WorkerProcess],
    start_sink: Callable[..., WorkerProcess],
) -> None:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    messages = list(generate(SimConfig(customers=40, seed=7, start=start, total_events=400,
                                       event_gap_s=5.0, bad_share=0.08)))
    bad = [m for m in messages if m.is_bad]
    good = [m for m in messages if not m.is_bad]
    assert {m.expected_error for m in bad} >= {"invalid_json", "schema_violation"}, "mix too thin"

    start_worker()
    start_sink()
    settings = stack.settings()
    publish(stack.endpoints.kafka_bootstrap, settings.topic_touchpoints,
            [(m.key, m.value) for m in messages])

    letters = consume_all(stack.endpoints.kafka_bootstrap, settings.topic_dlq, expect=len(bad),
                          timeout_s=90, settle_s=2)
    assert len(letters) == len(bad)
    by_value: dict[tuple[bytes | None, bytes | None], SimMessage] = {
        (m.key, m.value): m for m in bad}
    for record in letters:
        # (a value over 1 MiB, the too_large one, is kept gzip-compressed: docs/events.md)
        value = original_value(record.value, record.headers)
        original = by_value[(record.key, value)]
        info = parse_dead_letter_headers(record.headers)
        assert info.code == original.expected_error, info
        assert info.message and info.source_topic == settings.topic_touchpoints
        assert info.source_offset is not None and info.received_at is not None
    codes = Counter(parse_dead_letter_headers(r.headers).code for r in letters)
    assert sum(codes.values()) == len(bad)

    client = clickhouse_client(stack)
    good_ids = {orjson.loads(m.value)["event_id"] for m in good}

    def stored() -> bool:
        return client.execute("SELECT uniqExact(event_id) FROM touchpoint_events")[0][0] == len(
            good_ids)

    wait_until(stored, 90, "every valid event to be stored by the sink")
    rows = client.execute("SELECT event_id FROM touchpoint_events FINAL")
    assert {r[0] for r in rows} == good_ids
    dead = client.execute("SELECT code, raw FROM dead_letters")
    assert Counter(code for code, _ in dead) == Counter(m.expected_error for m in bad)
