"""Batches of scored messages: their states are written, their outputs handed to Kafka and the
messages acked together, once per batch instead of once per message.

The agents consume without automatic acks (``stream.noack()``). Each message is scored at once
(:class:`streams.processing.Processor` keeps the changed state in memory) and its outputs (alerts,
score updates, dead letters, re-keyed events) wait in the batch. :meth:`Batches.flush` then

1. writes every state changed since the last flush to the Faust table, once per customer (one
   RocksDB put and one changelog record each, instead of one per event; :class:`ChangelogWriter`);
2. hands every output to the producer, in the order the messages produced them;
3. waits until the broker has every one of those records (the producer's delivery futures);
4. acks the batch's messages.

Delivery guarantee: at least once. A message is acked only after the broker acknowledged its
changelog record and outputs (``acks=all``), so a committed offset never passes a record that
was lost. A worker that stops or dies mid-batch has acked nothing of that batch: its messages are
delivered again and the event ids in the customers' states make the repeats change nothing.

Failure behaviour: a state write, a send or a delivery that fails is retried (a failed delivery
by sending the record again) with capped exponential backoff until it succeeds (never skipped);
meanwhile the agents keep adding to the next batch until it is full, then wait. Every failed
attempt is logged and counted in ``cx_batch_retries_total`` (stage ``state``, ``send`` or
``delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

from faust.streams import _current_event
from faust.types import TP, EventT

from streams import metrics
from streams.processing import Output, PendingWrite, Processor, StateTable

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


@contextmanager
def _as_current(event: EventT) -> Iterator[None]:
    """Faust takes the partition of a table write from the event being processed (a context
    variable that its stream iterator sets). A batch writes after the fact, so it points that
    variable at the event that last changed the customer: the write lands in that event's
    partition, as it would have inside the stream."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


# (topic name, key, value, headers): hands one record to the producer and returns its delivery
# future (or None when there is nothing to wait for). The worker's is Faust's
# ``app.producer.send``, not ``Topic.send``: that adds a FutureMessage, sensors and a producer
# lookup per record (~30 us here) and delivers the same way.
Send = Callable[[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None], Awaitable[Any]]


class StateWriter(Protocol):
    async def write(self, write: PendingWrite) -> Any:
        """Write one state; returns a delivery future to wait for, or None."""

    def after_batch(self) -> None: ...


class MappingWriter:
    """Writes states with ``table[key] = value`` (a Faust table, or a dict in tests), with the
    anchor event made current so that Faust places the write in the anchor's partition."""

    def __init__(self, table: StateTable) -> None:
        self.table = table

    async def write(self, write: PendingWrite) -> None:
        with _as_current(write.anchor):
            self.table[write.customer_id.encode()] = write.value

    def after_batch(self) -> None:
        pass


class ChangelogWriter:
    """Writes states into a Faust table the way ``Table.__setitem__`` does (a put into the
    store's partition and a record on the table's changelog topic, same key, value and
    partition), without Faust's per-write costs.

    ``Table.__setitem__`` queues each changelog record in Faust's ProducerBuffer, whose drain
    task sends them one by one, creates a FutureMessage and a callback per record, and writes the
    changelog offset into RocksDB after every record (``Collection._on_changelog_sent``). Here
    each record goes straight to the producer, and the highest offset per partition is written
    once per batch (:meth:`after_batch`), which is all that recovery reads: at start-up or after
    a rebalance Faust replays the changelog from that offset on. Recovery, standbys and reads are
    Faust's own. Not for ``processing_guarantee="exactly_once"`` (Faust then persists offsets at
    commit time), which CX Signals does not use.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._offsets: dict[int, int] = {}

    async def write(self, write: PendingWrite) -> Any:
        """Put the state into the store and hand its changelog record to the producer; returns
        the record's delivery future."""
        key = write.customer_id.encode()
        message = write.anchor.message
        with _as_current(write.anchor):
            self.table.data[key] = write.value  # the store reads the partition off the event
        sent = await self.table.app.producer.send(
            self.table.changelog_topic.get_topic_name(), key, write.value, message.partition,
            None, None,
        )
        sent.add_done_callback(self._on_sent)
        return sent

    def _on_sent(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # Batches.flush sends the record again
        metadata = fut.result()
        partition = metadata.topic_partition.partition
        if metadata.offset > self._offsets.get(partition, -1):
            self._offsets[partition] = metadata.offset

    def after_batch(self) -> None:
        topic = self.table.changelog_topic.get_topic_name()
        offsets, self._offsets = self._offsets, {}
        for partition, offset in offsets.items():
            self.table.data.set_persisted_offset(TP(topic, partition), offset)


class Batches:
    """The open batch of the scoring agents, shared by all of them (one per worker)."""

    def __init__(
        self,
        processor: Processor,
        writer: StateWriter,
        send: Send,
        topics: Mapping[str, str],
        *,
        max_events: int,
        max_ms: int,
    ) -> None:
        self.processor = processor
        self.writer = writer
        self.send = send
        self.topics = topics
        self.max_events = max_events
        self.max_s = max_ms / 1000
        self._events: list[EventT] = []
        self._outputs: list[Output] = []
        self._opened_at = 0.0
        self._lock = asyncio.Lock()

    def add(self, event: EventT, outputs: Iterable[Output] = ()) -> None:
        """Add a message that was handled, with the records it produced."""
        if not self._events:
            self._opened_at = time.monotonic()
        self._events.append(event)
        self._outputs.extend(outputs)

    def __len__(self) -> int:
        return len(self._events)

    @property
    def full(self) -> bool:
        return len(self._events) >= self.max_events

    def due(self, now_s: float | None = None) -> bool:
        """Full, or open for longer than ``max_ms``."""
        if not self._events:
            return False
        now_s = time.monotonic() if now_s is None else now_s
        return self.full or now_s - self._opened_at >= self.max_s

    async def flush(self) -> int:
        """Write, hand over and ack the open batch; returns its number of messages."""
        async with self._lock:
            events, outputs = self._events, self._outputs
            if not events and not self.processor.dirty_customers:
                return 0
            self._events, self._outputs = [], []
            started = time.perf_counter()
            # Taken in the same step as the messages: the states of exactly this batch (or newer).
            writes = self.processor.pending_writes()
            self.writer.after_batch()  # offsets of the previous batch's records, sent by now
            handed: list[tuple[str, Callable[[], Awaitable[Any]], Any]] = []
            for write in writes:
                attempt = partial(self.writer.write, write)
                handed.append(("state", attempt, await self._retry("state", attempt)))
                self.processor.written(write)
            for output in outputs:
                attempt = partial(self._send, output)
                handed.append(("send", attempt, await self._retry("send", attempt)))
            await self._confirm(handed)
            for event in events:
                event.ack()
            metrics.batch_messages.observe(len(events))
            metrics.batch_flush_seconds.observe(time.perf_counter() - started)
            return len(events)

    async def _send(self, output: Output) -> Any:
        delivery = await self.send(self.topics[output.topic], output.key, output.value,
                                   output.headers)
        if output.on_sent is not None:
            output.on_sent()
        return delivery

    async def _confirm(self, handed: list[tuple[str, Callable[[], Awaitable[Any]], Any]]) -> None:
        """Wait until the broker has every record handed over (the producer's delivery futures);
        hand a record over again if its delivery failed."""
        for stage, attempt, delivery in handed:
            delay_s = RETRY_FIRST_S
            while delivery is not None:
                try:
                    await delivery
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    metrics.batch_retries.labels("delivery").inc()
                    log.exception("batch %s not delivered; sending again in %.1f s", stage,
                                  delay_s)
                    await asyncio.sleep(delay_s)
                    delay_s = min(RETRY_MAX_S, delay_s * 2)
                    delivery = await self._retry(stage, attempt)

    async def _retry(self, stage: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``attempt`` until it does not raise; returns what it returned (awaited)."""
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
