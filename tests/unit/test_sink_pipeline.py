"""The sink collects the next batch while the previous one is written, and commits in order.

A real ClickHouse writer is replaced by one whose write blocks until the test releases it, so the
order of collect, write and commit is observable; the integration tests (test_sink_*.py) check
the same loop against the real services.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from sinks.clickhouse import WriteStats
from sinks.config import SinkConfig
from sinks.consumer import StoreLoop
from sinks.rows import TOUCHPOINT_EVENTS

TOPIC = "cx.touchpoints"
TP = TopicPartition(TOPIC, 0)


class ScriptedConsumer:
    """Hands out one fetch per getmany; records what happened, in order."""

    def __init__(self, fetches: list[list[Any]], log: list[str]) -> None:
        self.fetches = fetches
        self.log = log
        self.paused = False
        self.pauses = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if self.fetches and not self.paused:
            fetch = self.fetches.pop(0)
            self.log.append(f"fetch {fetch[0].offset}-{fetch[-1].offset}")
            return {TP: fetch}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(f"commit {offsets[TP]}")

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *_tps: TopicPartition) -> None:
        if not self.paused:
            self.pauses += 1
        self.paused = True

    def resume(self, *_tps: TopicPartition) -> None:
        self.paused = False


class GatedWriter:
    """Each write waits (in the sink's worker thread) until the test opens its gate."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.gates: list[threading.Event] = []
        self.started = threading.Semaphore(0)

    def write(self, rows: dict[str, list[Any]]) -> WriteStats:
        ids = [row[0] for row in rows[TOUCHPOINT_EVENTS]]
        gate = threading.Event()
        self.gates.append(gate)
        self.log.append(f"write start {ids[0]}-{ids[-1]}")
        self.started.release()
        assert gate.wait(10), "the test never opened the gate"
        self.log.append(f"write done {ids[0]}-{ids[-1]}")
        return WriteStats(rows={t: len(r) for t, r in rows.items()})

    def close(self) -> None: ...


def _records(first: int, n: int) -> list[Any]:
    return [SimpleNamespace(topic=TOPIC, partition=0, offset=i, value=b"{}", timestamp=0)
            for i in range(first, first + n)]


def _build(record: Any, _now: datetime) -> list[tuple[str, Any]]:
    return [(TOUCHPOINT_EVENTS, (record.offset,) + (None,) * 40)]


async def _started(writer: GatedWriter) -> None:
    assert await asyncio.to_thread(writer.started.acquire, True, 10)


def _sink(batches: int) -> tuple[list[str], ScriptedConsumer, GatedWriter, StoreLoop]:
    """A loop of 5-record batches over ``batches`` fetches, its gated writer and the shared log
    of what happened."""
    log: list[str] = []
    consumer = ScriptedConsumer([_records(5 * i, 5) for i in range(batches)], log)
    writer = GatedWriter(log)
    loop = StoreLoop(SinkConfig(batch_rows=5, batch_ms=1000), _build, writer)  # type: ignore[arg-type]
    return log, consumer, writer, loop


def test_the_next_batch_is_collected_while_the_previous_one_is_written() -> None:
    log, consumer, writer, loop = _sink(2)

    async def scenario() -> None:
        assert await loop.run_once(consumer) == 5
        await _started(writer)
        # Batch 1 is still being written: batch 2 is collected meanwhile, and run_once waits
        # for batch 1 before handing batch 2 to the writer.
        second = asyncio.ensure_future(loop.run_once(consumer))
        await asyncio.sleep(0.2)
        assert "fetch 5-9" in log and not second.done()
        assert "commit 5" not in log
        writer.gates[0].set()
        assert await second == 5
        await _started(writer)
        writer.gates[1].set()
        await loop.drain(consumer)

    asyncio.run(scenario())

    assert log == [
        "fetch 0-4", "write start 0-4",
        "fetch 5-9",  # collected while batch 1 is written
        "write done 0-4", "commit 5",  # batch 1 committed before batch 2 is written
        "write start 5-9", "write done 5-9", "commit 10",
    ]


def test_a_batch_grows_while_the_previous_one_is_still_being_written() -> None:
    log: list[str] = []
    consumer = ScriptedConsumer([_records(0, 5)], log)
    writer = GatedWriter(log)
    loop = StoreLoop(SinkConfig(batch_rows=100, batch_ms=50), _build, writer)  # type: ignore[arg-type]

    async def scenario() -> None:
        assert await loop.run_once(consumer) == 5  # written once 50 ms old: nothing in flight
        await _started(writer)
        consumer.fetches.append(_records(5, 5))
        second = asyncio.ensure_future(loop.run_once(consumer))
        await asyncio.sleep(0.2)  # past the batch's 50 ms, the first write still going on
        consumer.fetches.append(_records(10, 5))
        await asyncio.sleep(0.2)
        assert not second.done()
        writer.gates[0].set()
        assert await second == 10
        assert consumer.pauses == 0  # never full: the partitions were not paused meanwhile
        await _started(writer)
        writer.gates[1].set()
        await loop.drain(consumer)

    asyncio.run(scenario())

    # Both fetches that came during the first write went into one insert.
    assert [line for line in log if line.startswith("write start")] == [
        "write start 0-4", "write start 5-14"]
    assert [line for line in log if line.startswith("commit")] == ["commit 5", "commit 15"]


def test_a_complete_batch_waiting_for_a_slow_write_pauses_the_partitions() -> None:
    log, consumer, writer, loop = _sink(3)

    async def scenario() -> None:
        await loop.run_once(consumer)
        await _started(writer)
        second = asyncio.ensure_future(loop.run_once(consumer))
        await asyncio.sleep(1.3)  # past the 1 s keep-alive poll of the wait
        # Two batches held, none more: the third fetch stays in Kafka while paused.
        assert consumer.paused and consumer.fetches
        writer.gates[0].set()
        await second
        assert not consumer.paused and consumer.pauses == 1
        await _started(writer)
        writer.gates[1].set()
        await loop.drain(consumer)

    asyncio.run(scenario())

    assert log.count("fetch 10-14") == 0
    assert [line for line in log if line.startswith("commit")] == ["commit 5", "commit 10"]


def test_a_failed_write_is_raised_by_the_next_wait_and_nothing_is_committed() -> None:
    class Failing:
        def write(self, rows: dict[str, list[Any]]) -> WriteStats:
            from sinks.retry import RetryStopped

            raise RetryStopped("stopped before the call succeeded")

        def close(self) -> None: ...

    log: list[str] = []
    consumer = ScriptedConsumer([_records(0, 5)], log)
    loop = StoreLoop(SinkConfig(batch_rows=5, batch_ms=1000), _build, Failing())  # type: ignore[arg-type]

    async def scenario() -> str:
        await loop.run_once(consumer)
        try:
            await loop.drain(consumer)
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            return type(exc).__name__
        return "nothing raised"

    assert asyncio.run(scenario()) == "RetryStopped"
    assert not [line for line in log if line.startswith("commit")]


def test_a_stop_lets_a_write_that_ends_in_time_commit(monkeypatch: Any) -> None:
    import sinks.consumer as consumer_module

    monkeypatch.setattr(consumer_module, "STOP_FLUSH_S", 5.0)
    log, consumer, writer, loop = _sink(1)

    async def scenario() -> None:
        await loop.run_once(consumer)
        await _started(writer)
        asyncio.get_running_loop().call_later(0.2, writer.gates[0].set)
        await loop._stop_flush()

    asyncio.run(scenario())
    assert log[-2:] == ["write done 0-4", "commit 5"]


def test_a_stop_cancels_a_write_that_does_not_end_in_time_and_commits_nothing(
        monkeypatch: Any) -> None:
    import sinks.consumer as consumer_module

    monkeypatch.setattr(consumer_module, "STOP_FLUSH_S", 0.2)
    log, consumer, writer, loop = _sink(1)

    async def scenario() -> float:
        await loop.run_once(consumer)
        await _started(writer)
        started = time.monotonic()
        await loop._stop_flush()
        waited = time.monotonic() - started
        writer.gates[0].set()  # let the worker thread end
        return waited

    waited = asyncio.run(scenario())
    assert 0.2 <= waited < 2.0
    assert not [line for line in log if line.startswith("commit")]


def test_the_sink_consumer_fetches_with_the_configured_minimum_and_wait() -> None:
    """aiokafka's 1-byte minimum answers every fetch at once with whatever arrived; the sink
    asks the broker to wait for CX_SINK_FETCH_MIN_BYTES or CX_SINK_FETCH_MAX_WAIT_MS."""
    from cxsignals.settings import Settings

    config = Settings(sink_fetch_min_bytes=54_321, sink_fetch_max_wait_ms=77).sink_config()
    loop = StoreLoop(config, _build, object())  # type: ignore[arg-type]

    async def build() -> Any:
        return loop.consumer()

    consumer = asyncio.run(build())
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (54_321, 77)
    defaults, fields = SinkConfig(), Settings.model_fields  # one default, whatever the env
    assert (defaults.fetch_min_bytes, defaults.fetch_max_wait_ms) == (
        fields["sink_fetch_min_bytes"].default, fields["sink_fetch_max_wait_ms"].default)
