"""The sink closes a batch on time even inside a big fetch: the rest of the fetch is carried
into the next batch, in order, and each batch commits exactly what it wrote."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from sinks.clickhouse import WriteStats
from sinks.config import SinkConfig
from sinks.consumer import YIELD_EVERY, StoreLoop

TOPIC = "cx.touchpoints"
TABLE = "rows_in_order"  # unkeyed: every row is kept


class FakeConsumer:
    """One fetch of ``n`` records of one partition, then nothing."""

    def __init__(self, n: int) -> None:
        self.fetches = [[SimpleNamespace(topic=TOPIC, partition=0, offset=i, value=b"{}")
                         for i in range(n)]]
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
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def write(self, rows: dict[str, list[Any]]) -> WriteStats:
        self.batches.append([row[0] for row in rows[TABLE]])
        return WriteStats(rows={t: len(r) for t, r in rows.items()})


def _slow_build(record: Any, _now: datetime) -> list[tuple[str, Any]]:
    time.sleep(0.0002)  # 0.2 ms a record: a sink on a busy core
    return [(TABLE, (record.offset,))]


def test_a_big_fetch_is_split_when_the_batch_is_due_and_nothing_is_lost() -> None:
    n = 6 * YIELD_EVERY  # ~0.6 s of building, against a 50 ms batch age
    consumer, writer = FakeConsumer(n), FakeWriter()
    loop = StoreLoop(SinkConfig(batch_ms=50), _slow_build, writer)  # type: ignore[arg-type]

    async def drain() -> list[int]:
        handled = []
        while sum(handled) < n:
            handled.append(await loop.run_once(consumer))  # type: ignore[arg-type]
        return handled

    handled = asyncio.run(drain())
    # The first batch closed after one chunk instead of building the whole fetch.
    assert handled[0] == YIELD_EVERY
    assert len(writer.batches) >= 2
    # Every record written once, in order, and each commit covers exactly what was written.
    assert [o for batch in writer.batches for o in batch] == list(range(n))
    ends = [offsets[TopicPartition(TOPIC, 0)] for offsets in consumer.commits]
    assert ends == [batch[-1] + 1 for batch in writer.batches]
