"""Ingest and score: validate each touchpoint, update the customer's state, publish alerts.

Delivery guarantee: at least once. A message is acked when its handler returns; by then its
dead letter, state change, alerts and score update were handed to the producer, and Faust
flushes the producer before it commits offsets. A redelivered event (same event_id) is
recognised by the customer's state and changes nothing, so alert ids and scores stay unique.

Failure behaviour: the handler never raises (Faust would ack the message and lose it). Invalid
input goes to the dead-letter topic with its key and value unchanged and the reason in headers;
an unexpected error while scoring a valid event dead-letters it as ``processing_error`` with
the exception, so `cxsignals dlq replay` can re-run it after a fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from faust import StreamT
from faust.types import EventT

from cxsignals.settings import get_settings
from schemas.events import EventBase
from streams import metrics
from streams.core.deadletter import dead_letter_headers
from streams.core.identity import route
from streams.core.validation import ErrorCode, Invalid, validate_event
from streams.processing import processor
from streams.tables import customer_state, identities
from streams.topics import app, dead_letters, keyed, touchpoints

log = logging.getLogger(__name__)
_settings = get_settings()
TICK_HEADER = "cx-tick"


def _linked_customer(anonymous_id: str) -> str | None:
    linked = identities.get(anonymous_id.encode())
    return linked.decode() if linked else None


def _validate(value: bytes | None, received_at: datetime) -> EventBase | Invalid:
    return validate_event(value, now=received_at, max_bytes=_settings.max_event_bytes,
                          max_future_skew_s=_settings.max_future_skew_s)


async def _dead_letter(event: EventT, invalid: Invalid, received_at: datetime) -> None:
    msg = event.message
    headers = dead_letter_headers(
        invalid, topic=msg.topic, partition=msg.partition, offset=msg.offset,
        received_at=received_at,
    )
    await dead_letters.send(key=msg.key, value=msg.value, headers=headers)
    metrics.dead_letters.labels(invalid.code.value).inc()


async def _score(event: EventT, scored: EventBase, customer_id: str) -> None:
    outcome = processor.process(customer_state, customer_id, scored)
    if outcome is not None:
        await processor.publish(outcome, customer_id, kafka_ts_s=event.message.timestamp)


async def handle_touchpoint(event: EventT) -> None:
    """Validate, route (identity stitching) and score one message from cx.touchpoints."""
    msg = event.message
    received_at = datetime.now(timezone.utc)
    metrics.messages_consumed.labels(msg.topic).inc()
    result = _validate(msg.value, received_at)
    if isinstance(result, Invalid):
        await _dead_letter(event, result, received_at)
        return
    decision = route(result, msg.key, _linked_customer)
    if decision.link is not None:
        anonymous, customer = decision.link
        if identities.get(anonymous.encode()) != customer.encode():
            identities[anonymous.encode()] = customer.encode()
    if decision.forward:
        await keyed.send(key=decision.customer_id.encode(), value=msg.value)
        return
    await _score(event, result, decision.customer_id)


def _has_header(headers: Any, name: str) -> bool:
    """Faust hands headers over as a list of pairs or as a mapping, depending on the path."""
    if not headers:
        return False
    if isinstance(headers, Mapping):
        return name in headers
    return any(pair[0] == name for pair in headers)


async def handle_keyed(event: EventT) -> None:
    """Score a re-keyed event, or run the engine's timer for an idle customer (a tick)."""
    msg = event.message
    metrics.messages_consumed.labels(msg.topic).inc()
    customer_id = (msg.key or b"").decode()
    if _has_header(msg.headers, TICK_HEADER):
        outcome = processor.tick(customer_state, customer_id)
        if outcome is not None:
            await processor.publish(outcome, customer_id, kafka_ts_s=None)
        return
    received_at = datetime.now(timezone.utc)
    result = _validate(msg.value, received_at)
    if isinstance(result, Invalid):  # only if the contract changed between the two reads
        await _dead_letter(event, result, received_at)
        return
    await _score(event, result, customer_id)


async def _guarded(event: EventT, handler: object, stage: str) -> None:
    assert callable(handler)
    try:
        await handler(event)
    except Exception as exc:  # never let Faust ack-and-drop: dead-letter with the reason
        metrics.processing_errors.labels(stage).inc()
        log.exception("%s failed at %s[%s]@%s", stage, event.message.topic,
                      event.message.partition, event.message.offset)
        reason = Invalid(ErrorCode.processing_error, f"{stage}: {type(exc).__name__}: {exc}")
        await _dead_letter(event, reason, datetime.now(timezone.utc))


@app.agent(touchpoints, name="ingest", concurrency=1)
async def ingest(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        await _guarded(event, handle_touchpoint, "ingest")


@app.agent(keyed, name="ingest-keyed", concurrency=1)
async def ingest_keyed(stream: StreamT[bytes]) -> None:
    async for event in stream.events():
        await _guarded(event, handle_keyed, "ingest-keyed")


@app.timer(interval=_settings.tick_interval_s, name="deadline-ticks")
async def deadline_ticks() -> None:
    """Wake idle customers whose deadlines passed in wall time (e.g. cart_recovery), by sending
    a tick through the keyed topic: tables may only change while processing a message."""
    for customer_id in processor.due_customers(customer_state, time.time()):
        await keyed.send(key=customer_id.encode(), value=b"", headers=[(TICK_HEADER, b"1")])
