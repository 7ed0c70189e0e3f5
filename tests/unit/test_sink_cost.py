"""bench.sink_cost's input: the events and what the worker publishes for them, as a sink reads
them (the counted run itself needs valgrind and ClickHouse: tests/integration)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.cache_profile import VirtualClock
from bench.sink_cost import sink_records
from schemas.topics import TopicNames


def test_the_records_are_the_events_and_the_outputs_the_sink_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    topics = TopicNames()
    VirtualClock().install(monkeypatch.setattr)  # as the counted run does: the same outputs
    records = sink_records(3_000, 300, 7)
    by_topic = Counter(r.topic for r in records)
    assert by_topic[topics.touchpoints] == 3_000
    assert by_topic[topics.scores] > 0  # a score update per dirty customer per fetch
    assert set(by_topic) <= {topics.touchpoints, topics.scores, topics.alerts_marketing,
                             topics.alerts_support, topics.alerts_control, topics.dead_letters}
    # outputs follow the fetch they came from: some before the last touchpoint event
    last_event = max(i for i, r in enumerate(records) if r.topic == topics.touchpoints)
    assert any(r.topic == topics.scores for r in records[:last_event])
    # each output topic-partition's offsets count up from 0, as a consumer would see them
    seen: dict[tuple[str, int], list[int]] = {}
    for r in records:
        if r.topic != topics.touchpoints:
            seen.setdefault((r.topic, r.partition), []).append(r.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in seen.values())
    VirtualClock().install(monkeypatch.setattr)
    again = sink_records(3_000, 300, 7)
    assert [r.value for r in again] == [r.value for r in records]  # the same every run
