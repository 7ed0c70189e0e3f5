"""Store agents: write touchpoint events, dead letters, scores and alerts to ClickHouse.

Delivery guarantee: at least once into ClickHouse, exactly once in query results (the tables
are ReplacingMergeTree keyed by event_id / alert_id; see docs/clickhouse.md). Messages are
batched by size and time (``CX_SINK_BATCH_ROWS`` / ``CX_SINK_BATCH_MS``); a batch is acked,
and so becomes committable, only after ClickHouse acknowledged every table's insert.

Failure behaviour: a failed insert is retried with the identical rows, with bounded exponential
backoff and jitter, for as long as it takes; meanwhile this agent stops consuming, so the
pipeline applies back-pressure and catches up when ClickHouse returns. Nothing is skipped.
``stream.take_events`` acks a batch in a ``finally`` even when the body is cancelled (shutdown
during an outage); each batch's messages are therefore *held* with an extra reference that is
released only after the write, so an unwritten batch is never committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from faust import StreamT
from faust.types import EventT

from cxsignals.settings import get_settings
from schemas.alerts import Alert
from schemas.scores import ScoreUpdate
from sinks.batch import BatchBuffer
from sinks.clickhouse import ClickHouseWriter
from sinks.retry import RetryStopped
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
from streams.core.deadletter import parse_dead_letter_headers
from streams.core.validation import Invalid, validate_event
from streams.processing import processor
from streams.topics import alerts_marketing, alerts_support, app, dead_letters, scores, touchpoints

log = logging.getLogger(__name__)
_settings = get_settings()
_within_s = _settings.sink_batch_ms / 1000.0
# A write that fails with an error the writer does not retry (schema mismatch, bad value) is
# retried here anyway, slowly: never skipped, and loud in logs and metrics.
STUBBORN_RETRY_S = 10.0


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


def _writer() -> ClickHouseWriter:
    ch = _settings.clickhouse
    return ClickHouseWriter.from_params(
        host=ch.host, port=ch.port, user=ch.user, password=ch.password, database=ch.database,
        observer=PrometheusObserver(),
    )


async def write_until_done(writer: ClickHouseWriter, rows: dict[str, list[Row]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, writer.write, rows)
            return
        except RetryStopped:
            raise
        except Exception:
            log.exception("ClickHouse write failed with an error the writer does not retry; "
                          "retrying in %.0fs (the batch stays uncommitted)", STUBBORN_RETRY_S)
            await asyncio.sleep(STUBBORN_RETRY_S)


async def _store_batches(stream: StreamT[bytes], build: object) -> None:
    assert callable(build)
    writer = _writer()
    try:
        async for events in stream.take_events(_settings.sink_batch_rows, within=_within_s):
            for event in events:  # hold: see the module docstring
                event.message.incref()
            buffer = BatchBuffer(max_rows=len(events) + 1, max_age_ms=0)
            now = datetime.now(timezone.utc)
            now_ms = int(time.time() * 1000)
            for event in events:
                for table, row in build(event, now):
                    buffer.add(table, row, now_ms=now_ms)
            batch = buffer.drain()
            if batch.rows:
                await write_until_done(writer, batch.rows)
            for event in events:  # release: the batch is in ClickHouse
                event.ack()
    finally:
        writer.close()


def touchpoint_rows(event: EventT, now: datetime) -> Sequence[tuple[str, Row]]:
    msg = event.message
    result = validate_event(msg.value, now=now, max_bytes=_settings.max_event_bytes,
                            max_future_skew_s=_settings.max_future_skew_s)
    if isinstance(result, Invalid):
        return [(DEAD_LETTERS, dead_letter_row(
            code=result.code.value, message=result.message, topic=msg.topic,
            partition=msg.partition, offset=msg.offset, received_at=now, raw=msg.value or b"",
            ingested_at=now,
        ))]
    comment = getattr(getattr(result, "properties", None), "comment", None)
    sentiment = processor.engine.sentiment.compound(comment) if comment else None
    return [(TOUCHPOINT_EVENTS, event_row(result, sentiment, ingested_at=now))]


def output_rows(event: EventT, now: datetime) -> Sequence[tuple[str, Row]]:
    msg = event.message
    if msg.topic == scores.get_topic_name():
        return [(CUSTOMER_SCORES, score_row(ScoreUpdate.model_validate_json(msg.value),
                                            ingested_at=now))]
    return [(ALERTS, alert_row(Alert.model_validate_json(msg.value), ingested_at=now))]


def processing_error_rows(event: EventT, now: datetime) -> Sequence[tuple[str, Row]]:
    """Dead letters the ingest agent raised itself (processing errors) are stored too; the
    invalid-input ones are stored from cx.touchpoints directly, so they are skipped here."""
    msg = event.message
    info = parse_dead_letter_headers(msg.headers)
    if info.code != "processing_error":
        return []
    return [(DEAD_LETTERS, dead_letter_row(
        code=info.code, message=info.message or "", topic=info.source_topic or msg.topic,
        partition=info.source_partition if info.source_partition is not None else -1,
        offset=info.source_offset if info.source_offset is not None else -1,
        received_at=info.received_at or now, raw=msg.value or b"", ingested_at=now,
    ))]


outputs = app.topic(
    alerts_marketing.get_topic_name(), alerts_support.get_topic_name(), scores.get_topic_name(),
    key_type=bytes, value_type=bytes,
)


@app.agent(touchpoints, name="store-touchpoints", concurrency=1)
async def store_touchpoints(stream: StreamT[bytes]) -> None:
    await _store_batches(stream, touchpoint_rows)


@app.agent(outputs, name="store-outputs", concurrency=1)
async def store_outputs(stream: StreamT[bytes]) -> None:
    await _store_batches(stream, output_rows)


@app.agent(dead_letters, name="store-processing-errors", concurrency=1)
async def store_processing_errors(stream: StreamT[bytes]) -> None:
    await _store_batches(stream, processing_error_rows)
