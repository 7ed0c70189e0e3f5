"""The store loop: write touchpoint events, dead letters, scores and alerts to ClickHouse.

Delivery guarantee: at least once into ClickHouse, exactly once in query results (the tables
are ReplacingMergeTree keyed by event_id / alert_id; see docs/clickhouse.md). The loop has its
own consumer group (``<app id>-store``) and commits a batch's offsets explicitly, only after
ClickHouse acknowledged every table's insert of that batch. It does not ride on the Faust
agents' acks: Faust acks messages it skips around rebalances, which could commit past rows that
were never written.

Batching: by size and time (``CX_SINK_BATCH_ROWS`` / ``CX_SINK_BATCH_MS``), one columnar insert
per table per batch.

Failure behaviour: a failed insert is retried with the identical rows, with bounded exponential
backoff and jitter, for as long as it takes (an error the writer does not classify as transient
is retried too, every ``STUBBORN_RETRY_S``, and logged as such). Meanwhile the loop pauses its
partitions and consumes nothing new but stays in its group, so the pipeline catches up when
ClickHouse returns. A crash or rebalance before the commit redelivers the batch; the table
engines collapse the duplicates. Nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from cxsignals.settings import Settings, get_settings
from schemas.alerts import Alert
from schemas.scores import ScoreUpdate
from sinks.batch import BatchBuffer
from sinks.clickhouse import ClickHouseWriter
from sinks.retry import RetryPolicy
from sinks.rows import (
    ALERTS,
    CUSTOMER_SCORES,
    DEAD_LETTERS,
    TOUCHPOINT_EVENTS,
    Row,
    alert_row,
    dead_letter_row,
    event_row,
    score_row,
)
from streams import metrics
from streams.app import MAX_MESSAGE_BYTES
from streams.core.deadletter import parse_dead_letter_headers
from streams.core.sentiment import SentimentAnalyzer
from streams.core.validation import ErrorCode, Invalid, validate_event
from streams.processing import processor
from streams.topics import app

log = logging.getLogger(__name__)
STUBBORN_RETRY_S = 10.0
Rows = Sequence[tuple[str, Row]]


class PrometheusObserver:
    """Feeds the writer's events into the worker's Prometheus metrics."""

    def rows_written(self, table: str, rows: int) -> None:
        metrics.clickhouse_rows.labels(table).inc(rows)

    def insert_seconds(self, table: str, seconds: float) -> None:
        metrics.clickhouse_insert_seconds.labels(table).observe(seconds)

    def batch_rows(self, rows: int) -> None:
        metrics.clickhouse_batch_rows.labels("all").observe(rows)

    def retry(self, table: str, failures: int, error: BaseException, delay_s: float) -> None:
        metrics.clickhouse_retries.labels(table).inc()
        log.warning("insert into %s failed (%s: %s); retry %d in %.1fs",
                    table, type(error).__name__, error, failures, delay_s)

    def failure(self, table: str, error: BaseException) -> None:
        metrics.clickhouse_failures.labels(table).inc()


class RowBuilder:
    """Turns one consumed record into the ClickHouse rows it stands for (pure but for the
    sentiment analyzer, which is deterministic)."""

    def __init__(self, settings: Settings, sentiment: SentimentAnalyzer) -> None:
        self.settings = settings
        self.sentiment = sentiment

    def __call__(self, record: ConsumerRecord, now: datetime) -> Rows:
        topic = record.topic
        s = self.settings
        if topic == s.topic_touchpoints:
            return self.touchpoint(record, now)
        if topic == s.topic_scores:
            update = ScoreUpdate.model_validate_json(record.value)
            return [(CUSTOMER_SCORES, score_row(update, ingested_at=now))]
        if topic in (s.topic_alerts_marketing, s.topic_alerts_support):
            alert = Alert.model_validate_json(record.value)
            return [(ALERTS, alert_row(alert, ingested_at=now))]
        if topic == s.topic_dlq:
            return self.processing_error(record, now)
        raise ValueError(f"record from unexpected topic {topic}")

    def touchpoint(self, record: ConsumerRecord, now: datetime) -> Rows:
        s = self.settings
        value: bytes = record.value or b""
        result = validate_event(value, now=now, max_bytes=s.max_event_bytes,
                                max_future_skew_s=s.max_future_skew_s)
        if isinstance(result, Invalid):
            return [(DEAD_LETTERS, dead_letter_row(
                code=result.code.value, message=result.message, topic=record.topic,
                partition=record.partition, offset=record.offset, received_at=now, raw=value,
                ingested_at=now,
            ))]
        comment = getattr(getattr(result, "properties", None), "comment", None)
        sentiment = self.sentiment.compound(comment) if comment else None
        return [(TOUCHPOINT_EVENTS, event_row(result, sentiment, ingested_at=now))]

    def processing_error(self, record: ConsumerRecord, now: datetime) -> Rows:
        """Dead letters for invalid input are stored from cx.touchpoints directly; only the
        ones the ingest agent raised itself (processing errors) are stored from the DLQ."""
        info = parse_dead_letter_headers(record.headers)
        if info.code != ErrorCode.processing_error.value:
            return []
        return [(DEAD_LETTERS, dead_letter_row(
            code=info.code, message=info.message or "", topic=info.source_topic or record.topic,
            partition=-1 if info.source_partition is None else info.source_partition,
            offset=-1 if info.source_offset is None else info.source_offset,
            received_at=info.received_at or now, raw=record.value or b"", ingested_at=now,
        ))]


class StoreLoop:
    """Consume, batch, write, then commit; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, build: Callable[[ConsumerRecord, datetime], Rows],
                 writer: ClickHouseWriter) -> None:
        self.settings = settings
        self.build = build
        self.writer = writer
        self.topics = (settings.topic_touchpoints, settings.topic_alerts_marketing,
                       settings.topic_alerts_support, settings.topic_scores, settings.topic_dlq)
        self._carry: list[ConsumerRecord] = []

    def consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=f"{s.app_id}-store",
            client_id=f"{s.app_id}-store",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=max(MAX_MESSAGE_BYTES, 50 * 1024 * 1024),
        )

    async def run(self) -> None:
        consumer = self.consumer()
        await consumer.start()
        try:
            while True:
                await self.run_once(consumer)
        finally:
            await consumer.stop()
            self.writer.close()

    async def _records(self, consumer: AIOKafkaConsumer, limit: int,
                       timeout_ms: int) -> list[ConsumerRecord]:
        if self._carry:
            records, self._carry = self._carry, []
            return records
        fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=limit)
        return [record for batch in fetched.values() for record in batch]

    async def run_once(self, consumer: AIOKafkaConsumer) -> int:
        """Collect one batch (size or age), write it, commit it; return the records handled."""
        s = self.settings
        buffer = BatchBuffer(max_rows=s.sink_batch_rows, max_age_ms=s.sink_batch_ms)
        handled = 0
        started_ms = _now_ms()
        while True:
            wait_ms = max(0, started_ms + s.sink_batch_ms - _now_ms())
            records = await self._records(consumer, s.sink_batch_rows - len(buffer), wait_ms)
            now = datetime.now(timezone.utc)
            now_ms = _now_ms()
            for record in records:
                source = (record.topic, record.partition, record.offset)
                rows = self._build(record, now)
                if not rows:
                    buffer.mark(source, now_ms=now_ms)
                for table, row in rows:
                    buffer.add(table, row, now_ms=now_ms, source=source)
            handled += len(records)
            if len(buffer) >= s.sink_batch_rows or _now_ms() - started_ms >= s.sink_batch_ms:
                break
        batch = buffer.drain()
        if not batch.offsets:
            return handled
        if batch.rows:
            await self._write(consumer, batch.rows)
        offsets = {TopicPartition(t, p): o + 1 for (t, p), o in batch.offsets.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved while we wrote: their new owner re-reads and re-writes the batch,
            # and ReplacingMergeTree collapses the repeat.
            log.warning("commit after write failed (%s): the batch will be redelivered", exc)
        return handled

    def _build(self, record: ConsumerRecord, now: datetime) -> Rows:
        try:
            return self.build(record, now)
        except Exception as exc:  # e.g. a foreign producer's bad alert: keep it, never drop it
            metrics.processing_errors.labels("store").inc()
            log.exception("cannot store %s[%d]@%d", record.topic, record.partition, record.offset)
            return [(DEAD_LETTERS, dead_letter_row(
                code=ErrorCode.processing_error.value, message=f"store: {type(exc).__name__}",
                topic=record.topic, partition=record.partition, offset=record.offset,
                received_at=now, raw=record.value or b"", ingested_at=now,
            ))]

    async def _write(self, consumer: AIOKafkaConsumer, rows: dict[str, list[Row]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            future = loop.run_in_executor(None, self.writer.write, rows)
            assigned = consumer.assignment()
            consumer.pause(*assigned)
            try:
                while not future.done():
                    await asyncio.wait({future}, timeout=1.0)
                    if not future.done():
                        # Stay in the group while ClickHouse is away; a rebalance may hand us
                        # new, unpaused partitions: keep what they return for the next batch.
                        fetched = await consumer.getmany(timeout_ms=0)
                        self._carry.extend(r for batch in fetched.values() for r in batch)
            finally:
                consumer.resume(*consumer.assignment())
            error = future.exception()
            if error is None:
                return
            log.error("ClickHouse write failed with an error the writer does not retry (%s: %s);"
                      " retrying in %.0fs, the batch stays uncommitted",
                      type(error).__name__, error, STUBBORN_RETRY_S)
            await asyncio.sleep(STUBBORN_RETRY_S)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def build_store_loop(settings: Settings) -> StoreLoop:
    ch = settings.clickhouse
    writer = ClickHouseWriter.from_params(
        host=ch.host, port=ch.port, user=ch.user, password=ch.password, database=ch.database,
        observer=PrometheusObserver(), retry=RetryPolicy(max_delay_s=settings.sink_retry_max_s),
    )
    return StoreLoop(settings, RowBuilder(settings, processor.engine.sentiment), writer)


@app.task
async def store() -> Any:
    """Runs the store loop for the worker's lifetime (every worker: the group shares the load)."""
    await build_store_loop(get_settings()).run()
