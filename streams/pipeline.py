"""The scoring pipeline: one whole fetch in, its outputs and states durable, its offsets acked.

For each record of a fetch, in partition order: validate it once from bytes, find its customer
(identity stitching), and either score it in place or forward it. An event is scored in place
only when it arrived on the partition that :func:`streams.partitioner.customer_partition`
gives its customer; any other (a producer with another partitioner, an event known by an
anonymous id, a mis-keyed one) goes through the keyed topic to that partition, so that one
customer's state is never split. Then idle customers whose deadlines passed are ticked.

Then, in this order (:meth:`ScoringPipeline.commit`):

1. every output (alerts, score updates, dead letters, forwarded events) is handed to the
   producer and the pipeline waits until the broker has each one;
2. every state changed by the fetch is written once per customer (RocksDB and changelog) and
   every new identity link, and the pipeline waits for the changelog records;
3. the fetch's offsets are acked (Faust's commit loop commits them).

Delivery guarantee: at least once, and a redelivery changes nothing. A state that marks an
event as seen is stored only after that event's outputs are durable, so a redelivered event
(after a crash anywhere in between) either finds its state unchanged and runs again, or finds
it seen and its outputs already delivered. Alert ids are deterministic, so a re-sent alert is
recognisable downstream.

Failure behaviour: an invalid message is dead-lettered with its key and value unchanged and the
reason in headers; an unexpected error while scoring a valid event dead-letters it as
``processing_error`` and the rest flows on. A hand-over, delivery or state write that fails is
retried with capped exponential backoff until it succeeds (counted in
``cx_batch_retries_total``, logged each time); nothing is acked meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from schemas.topics import TopicNames
from streams import metrics
from streams.core.deadletter import dead_letter_headers
from streams.core.identity import route
from streams.core.validation import ErrorCode, Invalid, validate_event
from streams.partitioner import customer_partition
from streams.processing import Output, Processor

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# A tick header on the keyed topic: written by workers before 0.2 (ticks now run in place).
LEGACY_TICK_HEADER = "cx-tick"


class KeyValueTable(Protocol):
    """A changelogged table by partition (the worker's is :class:`TablePartitions`)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def get_any(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    async def send_changelog(self, partition: int, key: bytes, value: bytes) -> Any: ...

    def persist_offsets(self) -> None: ...


# (topic, key, value, partition, headers) -> the record's delivery future
Send = Callable[[str, "bytes | None", "bytes | None", "int | None",
                 "Sequence[tuple[str, bytes]] | None"], Awaitable[Any]]
# (topic, partition, first offset, last offset)
Ack = Callable[[str, int, int, int], None]


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    partitions: int
    max_event_bytes: int
    max_future_skew_s: float
    ticks_per_fetch: int = 1000


class ScoringPipeline:
    def __init__(self, processor: Processor, states: KeyValueTable, identities: KeyValueTable,
                 send: Send, ack: Ack, topics: TopicNames, keyed_topic: str,
                 limits: PipelineLimits) -> None:
        self.processor = processor
        self.states = states
        self.identities = identities
        self.send = send
        self.ack = ack
        self.topics = topics
        self.keyed_topic = keyed_topic
        self.limits = limits
        self._links: dict[str, tuple[str, int]] = {}  # anonymous id -> (customer, partition)
        self._consumed = {name: metrics.child(metrics.messages_consumed, name)
                          for name in (topics.touchpoints, keyed_topic)}
        self.tick_partitions: Callable[[], Sequence[int]] = lambda: ()

    # -- one fetch ----------------------------------------------------------------------------

    async def handle(self, fetch: Mapping[Any, Sequence[Any]]) -> int:
        """Score a whole fetch (records per topic partition) and make it durable; returns the
        number of records handled."""
        started = time.perf_counter()
        now = datetime.now(timezone.utc)
        outputs: list[Output] = []
        handled = 0
        counts: dict[str, int] = {}
        for tp, records in fetch.items():
            if not records:
                continue
            handled += len(records)
            keyed = tp.topic == self.keyed_topic
            self._consumed[tp.topic].inc(len(records))
            for record in records:
                try:
                    self._one(record, keyed, now, outputs, counts)
                except Exception as exc:  # never lose it: dead-letter with the reason
                    stage = "ingest-keyed" if keyed else "ingest"
                    metrics.processing_errors.labels(stage).inc()
                    log.exception("%s failed at %s[%s]@%s", stage, record.topic,
                                  record.partition, record.offset)
                    reason = Invalid(ErrorCode.processing_error,
                                     f"{stage}: {type(exc).__name__}: {exc}")
                    outputs.append(self._dead_letter(record, reason, now))
        self._ticks(now, outputs)
        for event_type, n in counts.items():
            metrics.child(metrics.events_processed, event_type).inc(n)
        await self.commit(outputs)
        for tp, records in fetch.items():
            if records:
                self.ack(tp.topic, tp.partition, records[0].offset, records[-1].offset)
        if handled:
            metrics.batch_messages.observe(handled)
        metrics.batch_flush_seconds.observe(time.perf_counter() - started)
        return handled

    def _validate(self, value: bytes | None, now: datetime) -> Any:
        limits = self.limits
        return validate_event(value, now=now, max_bytes=limits.max_event_bytes,
                              max_future_skew_s=limits.max_future_skew_s)

    def _one(self, record: Any, keyed: bool, now: datetime, outputs: list[Output],
             counts: dict[str, int]) -> None:
        if keyed and not record.value and _has_header(record.headers, LEGACY_TICK_HEADER):
            return  # deadlines are checked in place now
        result = self._validate(record.value, now)
        if isinstance(result, Invalid):
            outputs.append(self._dead_letter(record, result, now))
            return
        decision = route(result, record.key, self._linked_customer)
        if decision.link is not None:
            anonymous, customer = decision.link
            self._remember_link(anonymous, customer, record.partition)
        customer_id = decision.customer_id
        partition = customer_partition(customer_id, self.limits.partitions)
        if partition != record.partition and not keyed:
            outputs.append(Output(self.keyed_topic, customer_id.encode(), record.value,
                                  partition=partition))
            return
        # (a keyed record on another partition means the partition count changed: score it
        # where it is rather than bounce it forever)
        outcome = self.processor.process(customer_id, record.partition, result, now)
        if outcome is None:
            return
        event_type = result.event_type
        counts[event_type] = counts.get(event_type, 0) + 1
        metrics.processing_lag.observe(max(0.0, (now - result.occurred_at).total_seconds()))
        state = outcome.state
        metrics.experience_score.observe(state.score)
        metrics.churn_risk.observe(state.risk)
        if outcome.alerts or outcome.score_update is not None or outcome.policy_events:
            outputs.extend(self.processor.outputs(outcome, customer_id,
                                                  kafka_ts_s=record.timestamp / 1000))

    def _ticks(self, now: datetime, outputs: list[Output]) -> None:
        now_s = now.timestamp()
        processor = self.processor
        budget = self.limits.ticks_per_fetch
        for partition in self.tick_partitions():
            for customer_id in processor.deadlines.pop_due(partition, now_s, budget):
                budget -= 1
                try:
                    outcome = processor.tick(customer_id, partition, now)
                except Exception:
                    metrics.processing_errors.labels("tick").inc()
                    log.exception("tick of a customer on partition %d failed", partition)
                    continue
                if outcome is not None:
                    outputs.extend(processor.outputs(outcome, customer_id, kafka_ts_s=None))
            if budget <= 0:
                return

    # -- identity links -------------------------------------------------------------------------

    def _linked_customer(self, anonymous_id: str) -> str | None:
        pending = self._links.get(anonymous_id)
        if pending is not None:
            return pending[0]
        linked = self.identities.get_any(anonymous_id.encode())
        return linked.decode() if linked else None

    def _remember_link(self, anonymous: str, customer: str, partition: int) -> None:
        if self._linked_customer(anonymous) != customer:
            self._links[anonymous] = (customer, partition)

    # -- making it durable ----------------------------------------------------------------------

    def _dead_letter(self, record: Any, invalid: Invalid, now: datetime) -> Output:
        headers = dead_letter_headers(invalid, topic=record.topic, partition=record.partition,
                                      offset=record.offset, received_at=now)
        return Output(self.topics.dead_letters, record.key, record.value, headers,
                      on_sent=metrics.child(metrics.dead_letters, invalid.code.value).inc)

    async def commit(self, outputs: list[Output]) -> None:
        """Outputs first, then states and links; returns when the broker has all of them."""
        handed = []
        for output in outputs:
            attempt = _bind_send(self.send, output)
            handed.append(("send", attempt, await _retry("send", attempt), output.on_sent))
        await _confirm(handed)
        writes = self.processor.pending_writes()
        links, self._links = self._links, {}
        if not writes and not links:
            return
        handed = []
        states = self.states
        for write in writes:
            attempt = _bind_write(states, write.partition, write.customer_id.encode(),
                                  write.value)
            handed.append(("state", attempt, await _retry("state", attempt), None))
        identities = self.identities
        for anonymous, (customer, partition) in links.items():
            attempt = _bind_write(identities, partition, anonymous.encode(), customer.encode())
            handed.append(("state", attempt, await _retry("state", attempt), None))
        await _confirm(handed)
        for write in writes:
            self.processor.written(write)
        states.persist_offsets()
        identities.persist_offsets()


def _bind_send(send: Send, output: Output) -> Callable[[], Awaitable[Any]]:
    def attempt() -> Awaitable[Any]:
        return send(output.topic, output.key, output.value, output.partition, output.headers)
    return attempt


def _bind_write(table: KeyValueTable, partition: int, key: bytes,
                value: bytes) -> Callable[[], Awaitable[Any]]:
    async def attempt() -> Any:
        table.put(partition, key, value)
        return await table.send_changelog(partition, key, value)
    return attempt


async def _retry(stage: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``attempt`` until it does not raise; returns what it returned."""
    delay_s = RETRY_FIRST_S
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.batch_retries.labels(stage).inc()
            log.exception("batch %s failed; retrying in %.1f s", stage, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(RETRY_MAX_S, delay_s * 2)


Handed = list[tuple[str, Callable[[], Awaitable[Any]], Any, "Callable[[], None] | None"]]


async def _confirm(handed: Handed) -> None:
    """Wait until the broker has every record handed over; hand a record over again if its
    delivery failed. Runs each record's ``on_sent`` once it is delivered."""
    for stage, attempt, delivery, on_sent in handed:
        delay_s = RETRY_FIRST_S
        while delivery is not None:
            try:
                await delivery
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.batch_retries.labels("delivery").inc()
                log.exception("batch %s not delivered; sending again in %.1f s", stage, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(RETRY_MAX_S, delay_s * 2)
                delivery = await _retry(stage, attempt)
        if on_sent is not None:
            on_sent()


def _has_header(headers: Any, name: str) -> bool:
    if not headers:
        return False
    if isinstance(headers, Mapping):
        return name in headers
    return any(pair[0] == name for pair in headers)
