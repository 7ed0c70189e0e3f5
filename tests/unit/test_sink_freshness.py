"""``cx_sink_event_to_row_seconds``: publish (the record's Kafka timestamp) to the row
acknowledged, observed once per touchpoint row after the write, before the commit."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from sinks.clickhouse import WriteStats
from sinks.config import SinkConfig
from sinks.consumer import StoreLoop
from sinks.rows import CUSTOMER_SCORES, TOUCHPOINT_EVENTS

TOPIC = "cx.touchpoints"
NAME = "cx_sink_event_to_row_seconds"


class FakeConsumer:
    def __init__(self, records: list[Any]) -> None:
        self.fetches = [records]
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if self.fetches:
            return {TopicPartition(TOPIC, 0): self.fetches.pop(0)}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0)}

    def pause(self, *_tps: TopicPartition) -> None: ...

    def resume(self, *_tps: TopicPartition) -> None: ...


class FakeWriter:
    def write(self, rows: dict[str, list[Any]]) -> WriteStats:
        return WriteStats(rows={t: len(r) for t, r in rows.items()})


def _build(record: Any, _now: datetime) -> list[tuple[str, Any]]:
    # touchpoints (even offsets) carry an event id; the others stand for score records
    table = TOUCHPOINT_EVENTS if record.offset % 2 == 0 else CUSTOMER_SCORES
    return [(table, (f"e-{record.offset}",) + (None,) * 40)]


def _sample(suffix: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(NAME + suffix, labels) or 0.0


def test_each_touchpoint_row_is_observed_once_with_its_age_after_the_write() -> None:
    published_ms = time.time() * 1000 - 2_000  # published 2 s ago
    records = [SimpleNamespace(topic=TOPIC, partition=0, offset=i, value=b"{}",
                               timestamp=published_ms) for i in range(10)]
    consumer = FakeConsumer(records)
    loop = StoreLoop(SinkConfig(batch_ms=20), _build, FakeWriter())  # type: ignore[arg-type]
    count, le_1, le_2_5 = _sample("_count"), _sample("_bucket", le="1.0"), _sample(
        "_bucket", le="2.5")

    async def one_batch() -> None:
        await loop.run_once(consumer)
        await loop.drain(consumer)

    asyncio.run(one_batch())

    assert consumer.commits  # the batch was written and committed
    assert _sample("_count") - count == 5  # the five touchpoint rows, not the score rows
    assert _sample("_bucket", le="1.0") == le_1  # none was fresher than 1 s...
    assert _sample("_bucket", le="2.5") - le_2_5 == 5  # ...all within 2.5 s
