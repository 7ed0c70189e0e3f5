"""Batches of scored messages: their states are written, their outputs handed to Kafka and the
messages acked together, once per batch instead of once per message.

The agents consume without automatic acks (``stream.noack()``). Each message is scored at once
(:class:`streams.processing.Processor` keeps the changed state in memory) and its outputs (alerts,
score updates, dead letters, re-keyed events) wait in the batch. :meth:`Batches.flush` then

1. writes every state changed since the last flush to the Faust table, once per customer (one
   RocksDB put and one changelog record each, instead of one per event);
2. hands every output to the producer, in the order the messages produced them;
3. acks the batch's messages.

Delivery guarantee: at least once. A message is acked only after its state change and outputs
were handed to Faust's producer, and Faust flushes the producer before it commits offsets. A
worker that stops or dies mid-batch has acked nothing of that batch: its messages are delivered
again and the event ids in the customers' states make the repeats change nothing.

Failure behaviour: a state write or a send that fails is retried with capped exponential backoff
until it succeeds (never skipped); meanwhile the agents keep adding to the next batch until it is
full, then wait. Every failed attempt is logged and counted in ``cx_batch_retries_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faust.streams import _current_event
from faust.types import EventT, TopicT

from streams import metrics
from streams.processing import Output, Processor, StateTable

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


def _make_current(event: EventT) -> None:
    """Faust takes the partition of a table write from the event being processed (a context
    variable that its stream iterator sets). A batch writes after the fact, so it points that
    variable at the event that last changed the customer: the write lands in that event's
    partition, as it would have inside the stream."""
    _current_event.set(weakref.ref(event))


class Batches:
    """The open batch of the scoring agents, shared by all of them (one per worker)."""

    def __init__(
        self,
        processor: Processor,
        table: StateTable,
        topics: Mapping[str, TopicT],
        *,
        max_events: int,
        max_ms: int,
    ) -> None:
        self.processor = processor
        self.table = table
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
            # Synchronous: the states written are exactly those of the messages taken above.
            await self._retry("state", self._write_states)
            for output in outputs:
                await self._retry("send", self._sender(output))
            for event in events:
                event.ack()
            metrics.batch_messages.observe(len(events))
            metrics.batch_flush_seconds.observe(time.perf_counter() - started)
            return len(events)

    def _write_states(self) -> None:
        token = _current_event.set(None)
        try:
            self.processor.flush(self.table, before_write=_make_current)
        finally:
            _current_event.reset(token)

    def _sender(self, output: Output) -> Callable[[], Any]:
        return lambda: self._send(output)

    async def _send(self, output: Output) -> None:
        await self.topics[output.topic].send(
            key=output.key, value=output.value, headers=output.headers
        )
        if output.on_sent is not None:
            output.on_sent()

    async def _retry(self, stage: str, attempt: Callable[[], Any]) -> None:
        delay_s = RETRY_FIRST_S
        while True:
            try:
                result = attempt()
                if asyncio.iscoroutine(result):
                    await result
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.batch_retries.labels(stage).inc()
                log.exception("batch %s failed; retrying in %.1f s", stage, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(RETRY_MAX_S, delay_s * 2)
