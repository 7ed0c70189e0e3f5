"""Ingest and score: validate each touchpoint, update the customer's state, publish alerts.

Delivery guarantee: at least once, in batches (see :mod:`streams.batching`). Messages are
consumed without automatic acks; each is validated and scored as it arrives, and its outputs wait
in the open batch. A batch is flushed (states written to the table once per customer, outputs
handed to the producer, every record acknowledged by the broker, then the messages acked) when
it holds ``CX_BATCH_MAX_EVENTS`` messages, when the agent's input queue runs dry, or after
``CX_BATCH_MAX_MS``. A redelivered event (same event_id) is recognised by the customer's state and
changes nothing, so alert ids and scores stay unique.

Failure behaviour: the handlers never raise (Faust would ack the message and lose it). Invalid
input goes to the dead-letter topic with its key and value unchanged and the reason in headers;
an unexpected error while scoring a valid event dead-letters it as ``processing_error`` with
the exception, so `cxsignals dlq replay` can re-run it after a fix. A flush that fails is
retried until it succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from faust import StreamT
from faust.types import EventT

from cxsignals.settings import get_settings
from schemas.events import EventBase
from streams import metrics
from streams.batching import Batches, ChangelogWriter
from streams.core.deadletter import dead_letter_headers
from streams.core.identity import route
from streams.core.validation import ErrorCode, Invalid, validate_event
from streams.processing import Output, processor
from streams.tables import customer_state, identities
from streams.topics import (
    alerts_marketing,
    alerts_support,
    app,
    dead_letters,
    keyed,
    scores,
    touchpoints,
)

log = logging.getLogger(__name__)
_settings = get_settings()
TICK_HEADER = "cx-tick"

async def _produce(topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]] | None) -> Any:
    return await app.producer.send(topic, key, value, None, None, headers)


batches = Batches(
    processor,
    ChangelogWriter(customer_state),
    _produce,
    {role: topic.get_topic_name() for role, topic in (
        ("alerts_marketing", alerts_marketing), ("alerts_support", alerts_support),
        ("scores", scores), ("dead_letters", dead_letters), ("keyed", keyed))},
    max_events=_settings.batch_max_events,
    max_ms=_settings.batch_max_ms,
)


def _linked_customer(anonymous_id: str) -> str | None:
    linked = identities.get(anonymous_id.encode())
    return linked.decode() if linked else None


def _validate(value: bytes | None, received_at: datetime) -> EventBase | Invalid:
    return validate_event(value, now=received_at, max_bytes=_settings.max_event_bytes,
                          max_future_skew_s=_settings.max_future_skew_s)


def _dead_letter(msg: Any, invalid: Invalid, received_at: datetime) -> Output:
    headers = dead_letter_headers(
        invalid, topic=msg.topic, partition=msg.partition, offset=msg.offset,
        received_at=received_at,
    )
    return Output("dead_letters", msg.key, msg.value, headers,
                  on_sent=metrics.dead_letters.labels(invalid.code.value).inc)


def _score(event: EventT, scored: EventBase, customer_id: str) -> list[Output]:
    outcome = processor.process(customer_state, customer_id, scored, anchor=event)
    if outcome is None:
        return []
    return processor.outputs(outcome, customer_id, kafka_ts_s=event.message.timestamp)


def handle_touchpoint(event: EventT) -> list[Output]:
    """Validate, route (identity stitching) and score one message from cx.touchpoints."""
    msg = event.message
    received_at = datetime.now(timezone.utc)
    metrics.child(metrics.messages_consumed, msg.topic).inc()
    result = _validate(msg.value, received_at)
    if isinstance(result, Invalid):
        return [_dead_letter(msg, result, received_at)]
    decision = route(result, msg.key, _linked_customer)
    if decision.link is not None:
        anonymous, customer = decision.link
        if identities.get(anonymous.encode()) != customer.encode():
            identities[anonymous.encode()] = customer.encode()
    if decision.forward:
        return [Output("keyed", decision.customer_id.encode(), msg.value)]
    return _score(event, result, decision.customer_id)


def _has_header(headers: Any, name: str) -> bool:
    """Faust hands headers over as a list of pairs or as a mapping, depending on the path."""
    if not headers:
        return False
    if isinstance(headers, Mapping):
        return name in headers
    return any(pair[0] == name for pair in headers)


def handle_keyed(event: EventT) -> list[Output]:
    """Score a re-keyed event, or run the engine's timer for an idle customer (a tick)."""
    msg = event.message
    metrics.child(metrics.messages_consumed, msg.topic).inc()
    customer_id = (msg.key or b"").decode()
    if _has_header(msg.headers, TICK_HEADER):
        outcome = processor.tick(customer_state, customer_id, anchor=event)
        if outcome is None:
            return []
        return processor.outputs(outcome, customer_id, kafka_ts_s=None)
    received_at = datetime.now(timezone.utc)
    result = _validate(msg.value, received_at)
    if isinstance(result, Invalid):  # only if the contract changed between the two reads
        return [_dead_letter(msg, result, received_at)]
    return _score(event, result, customer_id)


def _guarded(event: EventT, handler: Callable[[EventT], list[Output]], stage: str) -> None:
    try:
        outputs = handler(event)
    except Exception as exc:  # never let Faust ack-and-drop: dead-letter with the reason
        metrics.processing_errors.labels(stage).inc()
        log.exception("%s failed at %s[%s]@%s", stage, event.message.topic,
                      event.message.partition, event.message.offset)
        reason = Invalid(ErrorCode.processing_error, f"{stage}: {type(exc).__name__}: {exc}")
        outputs = [_dead_letter(event.message, reason, datetime.now(timezone.utc))]
    batches.add(event, outputs)


def _input_drained(stream: StreamT[bytes]) -> bool:
    queue = getattr(stream.channel, "queue", None)
    return queue is None or queue.empty()


async def _consume(stream: StreamT[bytes], handler: Callable[[EventT], list[Output]],
                   stage: str) -> None:
    manual: Any = stream  # StreamT does not declare noack(); faust.Stream has it
    async for event in manual.noack().events():
        _guarded(event, handler, stage)
        if batches.full or _input_drained(stream):
            await batches.flush()


@app.agent(touchpoints, name="ingest", concurrency=1)
async def ingest(stream: StreamT[bytes]) -> None:
    await _consume(stream, handle_touchpoint, "ingest")


@app.agent(keyed, name="ingest-keyed", concurrency=1)
async def ingest_keyed(stream: StreamT[bytes]) -> None:
    await _consume(stream, handle_keyed, "ingest-keyed")


@app.timer(interval=_settings.batch_max_ms / 1000, name="batch-flush")
async def batch_flush() -> None:
    """Flush a batch that waits for more messages than arrive (also during a rebalance, which
    waits until every message is acked)."""
    if batches.due():
        await batches.flush()


@app.timer(interval=_settings.tick_interval_s, name="deadline-ticks")
async def deadline_ticks() -> None:
    """Wake idle customers whose deadlines passed in wall time (e.g. cart_recovery), by sending
    a tick through the keyed topic: tables may only change while processing a message."""
    for customer_id in processor.due_customers(customer_state, time.time()):
        await keyed.send(key=customer_id.encode(), value=b"", headers=[(TICK_HEADER, b"1")])
