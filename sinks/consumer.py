"""The sink: write touchpoint events, dead letters, scores and alerts to ClickHouse.

It runs as its own process (``cxsignals sink``), apart from scoring, and scales by partitions on
its own: start more sinks with the same ``CX_APP_ID``.

Delivery guarantee: at least once into ClickHouse, exactly once in query results (the tables
are ReplacingMergeTree keyed by event_id / alert_id; see docs/clickhouse.md). The sink has its
own consumer group (``<app id>-store``) and commits a batch's offsets explicitly, only after
ClickHouse acknowledged every table's insert of that batch. A rebalance during a write makes the
commit fail: the new owner of those partitions writes the batch again and the table engines
collapse the repeat.

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

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from schemas.limits import MAX_MESSAGE_BYTES
from schemas.records import decode_alert, decode_score_update
from sinks import metrics
from sinks.batch import BatchBuffer
from sinks.clickhouse import ClickHouseWriter
from sinks.config import SinkConfig
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
from streams.core.deadletter import parse_dead_letter_headers
from streams.core.sentiment import SentimentAnalyzer, VaderAnalyzer
from streams.core.validation import ErrorCode, Invalid, validate_event

log = logging.getLogger(__name__)
STUBBORN_RETRY_S = 10.0
YIELD_EVERY = 500  # records turned into rows between two event-loop turns
FETCH_MAX_RECORDS = 5000
Rows = Sequence[tuple[str, Row]]


class PrometheusObserver:
    """Feeds the writer's events into the sink's Prometheus metrics."""

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

    def __init__(self, config: SinkConfig, sentiment: SentimentAnalyzer) -> None:
        self.config = config
        self.sentiment = sentiment
        topics = config.topics
        self._by_topic: dict[str, Callable[[ConsumerRecord, datetime], Rows]] = {
            topics.touchpoints: self.touchpoint,
            topics.scores: self.score,
            topics.alerts_marketing: self.alert,
            topics.alerts_support: self.alert,
            topics.dead_letters: self.processing_error,
        }

    def __call__(self, record: ConsumerRecord, now: datetime) -> Rows:
        build = self._by_topic.get(record.topic)
        if build is None:
            raise ValueError(f"record from unexpected topic {record.topic}")
        return build(record, now)

    def score(self, record: ConsumerRecord, now: datetime) -> Rows:
        update = decode_score_update(record.value or b"")
        return [(CUSTOMER_SCORES, score_row(update, ingested_at=now))]

    def alert(self, record: ConsumerRecord, now: datetime) -> Rows:
        alert = decode_alert(record.value or b"")
        return [(ALERTS, alert_row(alert, ingested_at=now))]

    def touchpoint(self, record: ConsumerRecord, now: datetime) -> Rows:
        config = self.config
        value: bytes = record.value or b""
        result = validate_event(value, now=now, max_bytes=config.max_event_bytes,
                                max_future_skew_s=config.max_future_skew_s)
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

    def __init__(self, config: SinkConfig, build: Callable[[ConsumerRecord, datetime], Rows],
                 writer: ClickHouseWriter) -> None:
        self.config = config
        self.build = build
        self.writer = writer
        self.topics = (config.topics.touchpoints, *config.topics.outputs())
        self._carry: list[ConsumerRecord] = []
        self.consumer_in_use: AIOKafkaConsumer | None = None

    def consumer(self) -> AIOKafkaConsumer:
        config = self.config
        return AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=config.kafka_bootstrap_servers,
            group_id=config.group_id,
            client_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=max(MAX_MESSAGE_BYTES, 50 * 1024 * 1024),
        )

    async def run(self) -> None:
        consumer = self.consumer()
        await consumer.start()
        self.consumer_in_use = consumer
        metrics.sink_up.set(1)
        log.info("sink consuming %s as group %s: Ready", ", ".join(self.topics),
                 self.config.group_id)
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
        fetched = await consumer.getmany(timeout_ms=timeout_ms,
                                         max_records=min(limit, FETCH_MAX_RECORDS))
        return [record for batch in fetched.values() for record in batch]

    async def run_once(self, consumer: AIOKafkaConsumer) -> int:
        """Collect one batch (size or age), write it, commit it; return the records handled."""
        batch_rows, batch_ms = self.config.batch_rows, self.config.batch_ms
        buffer = BatchBuffer(max_rows=batch_rows, max_age_ms=batch_ms)
        handled = 0
        started_ms = _now_ms()
        while True:
            wait_ms = max(0, started_ms + batch_ms - _now_ms())
            records = await self._records(consumer, batch_rows - len(buffer), wait_ms)
            now = datetime.now(timezone.utc)
            now_ms = _now_ms()
            for n, record in enumerate(records, 1):
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # rows of a big fetch: let the loop breathe
                source = (record.topic, record.partition, record.offset)
                rows = self._build(record, now)
                if not rows:
                    buffer.mark(source, now_ms=now_ms)
                for table, row in rows:
                    buffer.add(table, row, now_ms=now_ms, source=source)
            handled += len(records)
            if len(buffer) >= batch_rows or _now_ms() - started_ms >= batch_ms:
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
            metrics.sink_processing_errors.inc()
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


def build_sink(config: SinkConfig) -> StoreLoop:
    """The sink with its ClickHouse writer (retried forever) and its own sentiment analyzer."""
    ch = config.clickhouse
    writer = ClickHouseWriter.from_params(
        host=ch.host, port=ch.port, user=ch.user, password=ch.password, database=ch.database,
        observer=PrometheusObserver(), retry=RetryPolicy(max_delay_s=config.retry_max_s),
    )
    return StoreLoop(config, RowBuilder(config, VaderAnalyzer()), writer)


async def serve(sink: StoreLoop, *, lag_interval_s: float = 5.0) -> None:
    """Run the sink until cancelled (SIGTERM, Ctrl-C): the batch being written is not
    committed and is written again by whoever reads the partitions next."""
    from streams.loop_lag import watch_loop_lag

    async def lag() -> None:
        while True:
            await asyncio.sleep(lag_interval_s)
            consumer = sink.consumer_in_use
            if consumer is None:
                continue
            metrics.sink_lag.clear()
            for tp in consumer.assignment():
                try:
                    highwater = consumer.highwater(tp)
                    position = await consumer.position(tp)
                except Exception:  # revoked meanwhile: measured next time
                    continue
                if highwater is not None:
                    metrics.sink_lag.labels(tp.topic, str(tp.partition)).set(
                        max(0, highwater - position))

    helpers = [asyncio.ensure_future(watch_loop_lag()), asyncio.ensure_future(lag())]
    try:
        await sink.run()
    finally:
        metrics.sink_up.set(0)
        for helper in helpers:
            helper.cancel()
