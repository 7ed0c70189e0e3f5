"""The sink: write touchpoint events, dead letters, scores and alerts to ClickHouse.

It runs as its own process (``cxsignals sink``), apart from scoring, and scales by partitions on
its own: start more sinks with the same ``CX_APP_ID``.

Delivery guarantee: at least once into ClickHouse, exactly once in query results (the tables
are ReplacingMergeTree keyed by event_id / alert_id; see docs/clickhouse.md). The sink has its
own consumer group (``<app id>-store``) and commits a batch's offsets explicitly, only after
every row of the batch is durable somewhere: acknowledged by ClickHouse, or (a row ClickHouse can
never take) acknowledged by the broker on the sink dead-letter topic (``cx.sink.dlq``) with the
record it came from. A rebalance during a write makes the commit fail: the new owner of those
partitions writes the batch again and the table engines collapse the repeat.

Batching: by size and time (``CX_SINK_BATCH_ROWS`` / ``CX_SINK_BATCH_MS``), columnar inserts
per table per batch (split by month so that no insert touches more than 100 partitions).

Pipelining: a batch is written (in a worker thread), dead-lettered and committed while the next
one is collected; the next one is written only after the previous one was committed, so
commits stay in order and every committed offset covers rows that are durable. A batch is
collected for ``CX_SINK_BATCH_MS`` and then for as long as the previous write lasts, up to
``CX_SINK_BATCH_ROWS``: under a backlog the batches grow, and ClickHouse takes fewer, larger
inserts (an insert costs about the same whether it holds a thousand rows or ten thousand). At
most two batches are held: once the next batch is full and the previous one is still being
written, the loop pauses its partitions until the write is done.

Failure behaviour (nothing halts, nothing is skipped):

- ClickHouse unreachable, slow or misconfigured (start-up or mid-stream): retried with
  exponential backoff up to ``CX_SINK_RETRY_MAX_S`` between attempts, forever. Meanwhile the loop
  pauses its partitions and consumes nothing new (Kafka is the buffer, memory stays bounded by
  two batches) but stays in its group; ``/healthz`` answers 503 naming ``clickhouse`` and why, a
  log line says what is stuck (then at most every ``STUCK_LOG_EVERY_S``), and
  ``cx_sink_stuck_seconds{what="clickhouse"}`` grows. When ClickHouse is back the backlog is
  written in full batches.
- Kafka unreachable at start-up: the same wait, named ``kafka``.
- A row ClickHouse can never take (sinks/clickhouse.py bisects to find it): delivered to the
  sink dead-letter topic (headers: source topic/partition/offset, table, ClickHouse code and
  message) before the batch's offsets are committed; every other row is written.
- A record the sink cannot turn into a row is stored as a ``processing_error`` dead letter row.
- A crash or rebalance before the commit redelivers the batch; the table engines collapse the
  duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError

from schemas.limits import MAX_MESSAGE_BYTES
from schemas.records import decode_alert, decode_score_update
from sinks import metrics
from sinks.batch import Batch, BatchBuffer
from sinks.clickhouse import BatchWriter, ClickHouseWriter, Rejected, WriteStats
from sinks.config import SinkConfig
from sinks.retry import RetryPolicy, RetryStopped
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
from sinks.table_writers import TableWriters
from streams.batch_observer import BatchObserver
from streams.core.deadletter import (
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    HEADER_PREFIX,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    format_received_at,
    parse_dead_letter_headers,
)
from streams.core.sentiment import SentimentAnalyzer, VaderAnalyzer, comment_sentiment
from streams.core.validation import LOG_APPEND_TIME, ErrorCode, Invalid, validate_event
from streams.health import Health
from streams.kafka_security import KafkaSecurity

log = logging.getLogger(__name__)
STUCK_LOG_EVERY_S = 30.0
STOP_FLUSH_S = 2.0  # at shutdown, how long the batch being written may take to commit
YIELD_EVERY = 500  # records turned into rows between two event-loop turns
FETCH_MAX_RECORDS = 5000
# A batch old enough to be written but whose predecessor is still being written takes fetches
# at most this long apart, so that it is handed over soon after that write ends.
WRITING_POLL_MS = 20
Rows = Sequence[tuple[str, Row]]


# Sink dead letters: the rejected row's record, key and value unchanged, its own headers kept
# but for the pipeline's (``cx-``) ones, and these (besides the shared cx-error-*/cx-source-*).
SINK_REJECTED_CODE = "clickhouse_rejected"
HEADER_SINK_TABLE = "cx-sink-table"
HEADER_CLICKHOUSE_CODE = "cx-clickhouse-code"
HEADER_VALUE_DROPPED_BYTES = "cx-value-dropped-bytes"


class Stuck:
    """What the sink waits for (``clickhouse``, ``kafka``, ``sink_dlq``): sets the health
    problem and the stuck gauge, and logs the first failure, then at most every
    ``STUCK_LOG_EVERY_S``, then the recovery; so a 10-minute outage writes about 20 lines."""

    def __init__(self, what: str, health: Health, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.what = what
        self.health = health
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        self._logged = 0.0
        # The per-table writers report from their own threads.
        self._lock = threading.Lock()

    def failed(self, reason: str, delay_s: float) -> None:
        with self._lock:
            self._failed(reason, delay_s)

    def _failed(self, reason: str, delay_s: float) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
            self._logged = now - STUCK_LOG_EVERY_S
        self.failures += 1
        waited = now - self.since
        self.health.problem(self.what, reason)
        metrics.sink_stuck_seconds.labels(self.what).set(waited)
        if now - self._logged >= STUCK_LOG_EVERY_S:
            self._logged = now
            log.warning("%s stuck for %.0fs (%d failed attempts, next in %.1fs): %s",
                        self.what, waited, self.failures, delay_s, reason)

    def ok(self) -> None:
        with self._lock:
            self._ok()

    def _ok(self) -> None:
        if self.since is None:
            return
        log.info("%s is back after %.0fs (%d failed attempts)", self.what,
                 self.clock() - self.since, self.failures)
        self.since, self.failures = None, 0
        self.health.clear(self.what)
        metrics.sink_stuck_seconds.labels(self.what).set(0)


class PrometheusObserver:
    """Feeds the writer's events into the sink's Prometheus metrics and its health."""

    def __init__(self, health: Health | None = None, where: str = "ClickHouse") -> None:
        self.stuck = Stuck("clickhouse", health if health is not None else Health())
        self.where = where

    def rows_written(self, table: str, rows: int) -> None:
        metrics.clickhouse_rows.labels(table).inc(rows)
        self.stuck.ok()

    def insert_seconds(self, table: str, seconds: float) -> None:
        metrics.clickhouse_insert_seconds.labels(table).observe(seconds)

    def batch_rows(self, rows: int) -> None:
        metrics.clickhouse_batch_rows.labels("all").observe(rows)

    def retry(self, table: str, failures: int, error: BaseException, delay_s: float) -> None:
        metrics.clickhouse_retries.labels(table).inc()
        doing = "connect to" if table == "(connect)" else f"insert into {table} on"
        self.stuck.failed(f"cannot {doing} {self.where}: {type(error).__name__}: "
                          f"{_first_line(error)}", delay_s)

    def connected(self) -> None:
        self.stuck.ok()

    def failure(self, table: str, error: BaseException) -> None:
        metrics.clickhouse_failures.labels(table).inc()


def _first_line(error: BaseException) -> str:
    """The error's text on one line, without a server stack trace, at most 300 characters."""
    text = " ".join(str(error).split("Stack trace", 1)[0].split())
    return text if len(text) <= 300 else text[:297] + "..."


def sink_dead_letter(
    record: ConsumerRecord | None, rejected: Rejected, *, received_at: datetime
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the sink dead letter for a row ClickHouse rejected."""
    message = rejected.message
    if len(message) > 1000:
        message = message[:997] + "..."
    topic = record.topic if record is not None else ""
    partition = record.partition if record is not None else -1
    offset = record.offset if record is not None else -1
    kept = [(k, v or b"") for k, v in (record.headers if record is not None else ())
            if not k.startswith(HEADER_PREFIX)]
    headers = kept + [
        (HEADER_ERROR_CODE, SINK_REJECTED_CODE.encode()),
        (HEADER_ERROR_MESSAGE, message.encode("utf-8", "backslashreplace")),
        (HEADER_SOURCE_TOPIC, topic.encode("utf-8", "backslashreplace")),
        (HEADER_SOURCE_PARTITION, str(partition).encode()),
        (HEADER_SOURCE_OFFSET, str(offset).encode()),
        (HEADER_RECEIVED_AT, format_received_at(received_at).encode()),
        (HEADER_SINK_TABLE, rejected.table.encode()),
        (HEADER_CLICKHOUSE_CODE, str(rejected.code).encode()),
    ]
    key = record.key if record is not None else None
    value = (record.value or b"") if record is not None else b""
    return key, value, headers


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
            topics.alerts_control: self.control_alert,
        }

    def __call__(self, record: ConsumerRecord, now: datetime) -> Rows:
        build = self._by_topic.get(record.topic)
        if build is None:
            raise ValueError(f"record from unexpected topic {record.topic}")
        return build(record, now)

    def score(self, record: ConsumerRecord, now: datetime) -> Rows:
        if record.value is None:  # a tombstone: the customer was erased (cxsignals erase)
            return []
        update = decode_score_update(record.value)
        return [(CUSTOMER_SCORES, score_row(update, ingested_at=now))]

    def alert(self, record: ConsumerRecord, now: datetime) -> Rows:
        alert = decode_alert(record.value or b"")
        return [(ALERTS, alert_row(alert, ingested_at=now))]

    def control_alert(self, record: ConsumerRecord, now: datetime) -> Rows:
        """A control alert (withheld by its rule's control_share): the same row, control = 1."""
        alert = decode_alert(record.value or b"")
        return [(ALERTS, alert_row(alert, ingested_at=now, control=True))]

    def touchpoint(self, record: ConsumerRecord, now: datetime) -> Rows:
        config = self.config
        value: bytes = record.value or b""
        result = validate_event(value, now=now, max_bytes=config.max_event_bytes,
                                max_future_skew_s=config.max_future_skew_s,
                                record_ts_ms=record.timestamp
                                if record.timestamp_type == LOG_APPEND_TIME else None)
        if isinstance(result, Invalid):
            return [(DEAD_LETTERS, dead_letter_row(
                code=result.code.value, message=result.message, topic=record.topic,
                partition=record.partition, offset=record.offset, received_at=now, raw=value,
                ingested_at=now,
            ))]
        comment = getattr(getattr(result, "properties", None), "comment", None)
        sentiment = comment_sentiment(self.sentiment, comment)
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
    """Consume, batch, write, dead-letter, then commit; see the module docstring for the
    guarantees."""

    def __init__(self, config: SinkConfig, build: Callable[[ConsumerRecord, datetime], Rows],
                 writer: BatchWriter, health: Health | None = None) -> None:
        self.config = config
        self.build = build
        self.writer = writer
        self.health = health if health is not None else Health()
        self.topics = (config.topics.touchpoints, *config.topics.outputs())
        self._carry: list[ConsumerRecord] = []
        self._flushing: asyncio.Future[None] | None = None  # the batch being written
        self.consumer_in_use: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.backoff = RetryPolicy(initial_delay_s=0.5, max_delay_s=config.retry_max_s)
        self._event_to_row = BatchObserver(metrics.event_to_row)

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
            fetch_min_bytes=config.fetch_min_bytes,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            **config.kafka_security.aiokafka_options(),
        )

    def dead_letter_producer(self) -> AIOKafkaProducer:
        """Delivers rows ClickHouse rejected: acks from all in-sync replicas, idempotent, and
        records as large as any the sink consumes."""
        return AIOKafkaProducer(
            bootstrap_servers=self.config.kafka_bootstrap_servers,
            client_id=f"{self.config.group_id}-dlq",
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES + 64 * 1024,
            **self.config.kafka_security.aiokafka_options(),
        )

    async def run(self) -> None:
        """Wait for ClickHouse, then for Kafka (each as long as it takes, visible in /healthz
        and the log), then consume until cancelled."""
        consumer: AIOKafkaConsumer | None = None
        try:
            await self._wait_for_clickhouse()
            consumer, self.producer = await self._connect_kafka()
            self.consumer_in_use = consumer
            metrics.sink_up.set(1)
            log.info("sink consuming %s as group %s: Ready", ", ".join(self.topics),
                     self.config.group_id)
            while True:
                await self.run_once(consumer)
        finally:
            await self._stop_flush()
            self.writer.close()
            if consumer is not None:
                await consumer.stop()
            if self.producer is not None:
                await self.producer.stop()

    async def _stop_flush(self) -> None:
        """At shutdown: give the batch being written ``STOP_FLUSH_S`` to be written and
        committed, then cancel it (not committed: whoever reads the partitions next writes it
        again) and wait until it has ended, so that the writer is closed after its last use
        from this loop. An error of that batch is logged, not raised."""
        flushing, self._flushing = self._flushing, None
        if flushing is None:
            return
        if not flushing.done():
            await asyncio.wait({flushing}, timeout=STOP_FLUSH_S)
        flushing.cancel()
        result = (await asyncio.gather(flushing, return_exceptions=True))[0]
        if isinstance(result, asyncio.CancelledError):
            log.info("stop: the batch being written was not committed; it will be written again")
        elif isinstance(result, BaseException):
            log.warning("stop: the batch being written failed (%s: %s); it will be written again",
                        type(result).__name__, result)

    async def _wait_for_clickhouse(self) -> None:
        ch = self.config.clickhouse
        log.info("connecting to ClickHouse at %s/%s", ch.where, ch.database)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.writer.ping)
        observer = self.writer.observer
        if isinstance(observer, PrometheusObserver):
            observer.connected()
        log.info("ClickHouse at %s/%s answers", ch.where, ch.database)

    async def _connect_kafka(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        """Start the consumer and the dead-letter producer, retrying with backoff while the
        broker cannot be reached (``/healthz``: 503 ``kafka``)."""
        stuck = Stuck("kafka", self.health)
        bootstrap = self.config.kafka_bootstrap_servers
        failures = 0
        while True:
            consumer, producer = self.consumer(), self.dead_letter_producer()
            try:
                await consumer.start()
                await producer.start()
            except KafkaError as exc:
                failures += 1
                metrics.sink_kafka_retries.labels("start").inc()
                for client in (consumer, producer):
                    with contextlib.suppress(Exception):
                        await client.stop()
                delay = self.backoff.delay_s(failures)
                reason = await _kafka_problem(bootstrap, self.config.kafka_security)
                stuck.failed(f"cannot reach Kafka at {bootstrap}: "
                             f"{reason or f'{type(exc).__name__}: {_first_line(exc)}'}", delay)
                await asyncio.sleep(delay)
                continue
            stuck.ok()
            return consumer, producer

    async def _records(self, consumer: AIOKafkaConsumer, limit: int,
                       timeout_ms: int) -> list[ConsumerRecord]:
        if self._carry:
            records, self._carry = self._carry, []
            return records
        fetched = await consumer.getmany(timeout_ms=timeout_ms,
                                         max_records=min(limit, FETCH_MAX_RECORDS))
        return [record for batch in fetched.values() for record in batch]

    async def run_once(self, consumer: AIOKafkaConsumer) -> int:
        """Collect one batch (size or age) while the previous one is being written; then wait
        for that write and its commit, and start writing this batch (:meth:`_flush`); return
        the records handled. :meth:`drain` waits for the last batch."""
        batch_rows, batch_ms = self.config.batch_rows, self.config.batch_ms
        buffer = BatchBuffer(max_rows=batch_rows, max_age_ms=batch_ms)
        handled = 0
        started_ms = _now_ms()
        while True:
            wait_ms = started_ms + batch_ms - _now_ms()
            if wait_ms <= 0:
                wait_ms = WRITING_POLL_MS  # old enough: collecting on while the write lasts
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
                    buffer.add(table, row, now_ms=now_ms, source=source, origin=record)
            handled += len(records)
            if len(buffer) >= batch_rows:
                break
            if _now_ms() - started_ms >= batch_ms and not self._writing():
                break
        batch = buffer.drain()
        await self.drain(consumer)
        if batch.offsets:
            self._flushing = asyncio.ensure_future(self._flush(consumer, batch))
        return handled

    def _writing(self) -> bool:
        """True while the previous batch is being written (or dead-lettered, or committed)."""
        return self._flushing is not None and not self._flushing.done()

    async def drain(self, consumer: AIOKafkaConsumer) -> None:
        """Wait until the batch being written is written and committed. Meanwhile the partitions
        are paused (a rebalance may hand us new ones: they are paused too) and the consumer
        stays in its group; an error of the write (``RetryStopped``) is raised here."""
        flushing = self._flushing
        if flushing is None:
            return
        if not flushing.done():
            try:
                while not flushing.done():
                    consumer.pause(*consumer.assignment())
                    await asyncio.wait({flushing}, timeout=1.0)
                    if not flushing.done():
                        # getmany keeps us within max_poll_interval_ms; paused partitions
                        # return nothing, a partition assigned since may return one fetch.
                        fetched = await consumer.getmany(timeout_ms=0)
                        self._carry.extend(r for batch in fetched.values() for r in batch)
            finally:
                consumer.resume(*consumer.assignment())
        self._flushing = None
        flushing.result()

    async def _flush(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """Write ``batch``, deliver the rows ClickHouse cannot take to the sink dead-letter
        topic, then commit its offsets (runs as a task beside the next batch's collection).

        Failure behaviour: ClickHouse errors are retried (or bisected) by the writer and
        unexpected write errors here, both for ever; dead letters are retried until the broker
        has them; a failed commit (the partitions moved) is logged and the batch is written
        again by the next owner. Only ``RetryStopped`` (shutdown) ends the task with an error,
        raised by the next :meth:`drain`."""
        started_ms = _now_ms()
        if batch.rows:
            stats = await self._write(batch.rows)
            if stats.rejected:
                await self._dead_letter(batch, stats.rejected)
        written_ms = _now_ms()
        self._observe_freshness(batch)
        offsets = {TopicPartition(t, p): o + 1 for (t, p), o in batch.offsets.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved while we wrote: their new owner re-reads and re-writes the batch,
            # and ReplacingMergeTree collapses the repeat.
            log.warning("commit after write failed (%s): the batch will be redelivered", exc)
        log.debug("batch of %d rows: written in %d ms, committed in %d ms", batch.size,
                  written_ms - started_ms, _now_ms() - written_ms)

    def _observe_freshness(self, batch: Batch) -> None:
        """``cx_sink_event_to_row_seconds`` of the batch's touchpoint rows, now that ClickHouse
        (or the sink dead-letter topic) has every one of them."""
        records = batch.origins.get(TOUCHPOINT_EVENTS)
        if not records:
            return
        now_ms = time.time() * 1000
        observe = self._event_to_row.observe
        for record in records:
            age_ms = now_ms - record.timestamp
            observe(age_ms / 1000 if age_ms > 0 else 0.0)
        self._event_to_row.flush()

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

    async def _write(self, rows: dict[str, list[Row]]) -> WriteStats:
        """Write the batch from a worker thread (the writer retries ClickHouse errors itself)."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                stats = await loop.run_in_executor(None, self.writer.write, rows)
            except RetryStopped:
                raise
            except Exception as error:
                # Not a ClickHouse error (those are retried or bisected by the writer): a bug.
                # Retry the batch, never skip it.
                failures += 1
                delay = self.backoff.delay_s(failures)
                log.error("writing the batch failed unexpectedly (%s: %s); retrying in %.1fs, "
                          "the batch stays uncommitted", type(error).__name__, error, delay)
                self.health.problem("sink", f"write failed: {type(error).__name__}")
                await asyncio.sleep(delay)
                continue
            if failures:
                self.health.clear("sink")
            return stats

    async def _dead_letter(self, batch: Batch, rejected: list[Rejected]) -> None:
        """Deliver each rejected row's record to the sink dead-letter topic and wait for the
        broker's acknowledgement of every one (retried as long as it takes)."""
        producer = self.producer
        if producer is None:
            raise RuntimeError("the dead-letter producer is not started")
        topic = self.config.topics.sink_dead_letters
        now = datetime.now(timezone.utc)
        pending = []
        for item in rejected:
            origins = batch.origins.get(item.table) or []
            record = origins[item.index] if item.index < len(origins) else None
            pending.append((item, *sink_dead_letter(record, item, received_at=now)))
        stuck = Stuck("sink_dlq", self.health)
        failures = 0
        while pending:
            futures = []
            for _item, key, value, headers in pending:
                try:
                    futures.append(await producer.send(topic, value=value, key=key,
                                                       headers=headers))
                except KafkaError as exc:
                    futures.append(_failed(exc))
            results = await asyncio.gather(*futures, return_exceptions=True)
            retry = []
            for entry, result in zip(pending, results, strict=True):
                item, key, value, headers = entry
                if not isinstance(result, BaseException):
                    metrics.sink_dead_lettered_rows.labels(item.table, str(item.code)).inc()
                    log.warning("row of %s from %s rejected by ClickHouse (code %d: %s): sent "
                                "to %s", item.table, _where(headers), item.code,
                                item.message[:300], topic)
                    continue
                if isinstance(result, MessageSizeTooLargeError) and value:
                    # Larger than the dead-letter topic takes: keep the headers, say so.
                    headers = [*headers, (HEADER_VALUE_DROPPED_BYTES, str(len(value)).encode())]
                    log.error("dead letter of %d bytes too large for %s: sent without its value",
                              len(value), topic)
                    value = b""
                retry.append((item, key, value, headers))
                last = result
            pending = retry
            if pending:
                failures += 1
                metrics.sink_kafka_retries.labels("sink_dlq").inc()
                delay = self.backoff.delay_s(failures)
                stuck.failed(f"cannot deliver {len(pending)} dead letters to {topic}: "
                             f"{type(last).__name__}: {_first_line(last)}", delay)
                await asyncio.sleep(delay)
        stuck.ok()


async def _failed_coro(exc: BaseException) -> None:
    raise exc


def _failed(exc: BaseException) -> asyncio.Future[None]:
    return asyncio.ensure_future(_failed_coro(exc))


def _where(headers: list[tuple[str, bytes]]) -> str:
    found = dict(headers)
    return (f"{found.get(HEADER_SOURCE_TOPIC, b'').decode(errors='replace')}"
            f"[{found.get(HEADER_SOURCE_PARTITION, b'').decode()}]"
            f"@{found.get(HEADER_SOURCE_OFFSET, b'').decode()}")


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


async def _kafka_problem(bootstrap: str, security: KafkaSecurity) -> str | None:
    """Why Kafka refused the sink (wrong password, TLS...): aiokafka only says it could not
    bootstrap."""
    from streams.faust_internals import connection_problem

    return await connection_problem(bootstrap, security)


def build_sink(config: SinkConfig, health: Health | None = None) -> StoreLoop:
    """The sink with its ClickHouse writers (one connection per table, retried forever) and
    its own sentiment analyzer."""
    health = health if health is not None else Health()
    ch = config.clickhouse
    observer = PrometheusObserver(health, where=f"ClickHouse at {ch.where}")
    retry = RetryPolicy(max_delay_s=config.retry_max_s)

    def new_writer() -> ClickHouseWriter:
        return ClickHouseWriter.from_params(
            host=ch.host, port=ch.port, user=ch.user, password=ch.password,
            database=ch.database, secure=ch.secure, ca_certs=ch.ca_certs, verify=ch.verify,
            observer=observer, retry=retry,
        )

    writer = TableWriters(new_writer, observer)  # one connection per table, written at once
    return StoreLoop(config, RowBuilder(config, VaderAnalyzer()), writer, health)


async def serve(sink: StoreLoop, *, lag_interval_s: float = 5.0) -> None:
    """Run the sink until cancelled (SIGTERM, Ctrl-C): the batch being written gets a moment
    to commit; what is not committed (that batch, the one being collected) is written again by
    whoever reads the partitions next."""
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

    helpers = [asyncio.ensure_future(watch_loop_lag(stall_dump_s=sink.config.stall_dump_s)),
               asyncio.ensure_future(lag())]
    try:
        await sink.run()
    finally:
        metrics.sink_up.set(0)
        for helper in helpers:
            helper.cancel()
