"""The scoring pipeline: one whole fetch in, its outputs and states durable, its offsets acked.

For each record of a fetch, in partition order: validate it once from bytes, find its customer
(identity stitching), and either score it in place or forward it. An event is scored in place
only when it arrived on the partition that :func:`streams.partitioner.customer_partition`
gives its customer; any other (a producer with another partitioner, an event known by an
anonymous id, a mis-keyed one) goes through the keyed topic to that partition, so that one
customer's state is never split. Then idle customers whose deadlines passed are ticked, and
customers inactive for the state TTL are expired (deleted, with a changelog tombstone).

Then, in this order (a durable phase, which runs while the next fetch is scored):

1. every output of the fetch (alerts, score updates, dead letters, forwarded events) is handed
   to the producer, as one record batch per topic partition, and the phase waits until the
   broker has each one (a large fetch hands its outputs over every ``yield_every_records``
   records, each part in a durable phase of its own, and gives the event loop a turn);
2. when a checkpoint is under way, once the previous phase is durable: the next slice of its
   states goes to the changelog (at most ``checkpoint_slice_states`` per fetch), and once the
   broker has them they are stored in RocksDB (never ahead of the changelog). A checkpoint
   (``checkpoint_s`` after the last began, or ``checkpoint_events`` later) takes every
   customer whose state changed since, every new identity link (written with its first slice)
   and the acks of every fetch handled so far; a slice encodes each state as it is then, with
   every event scored so far, whose outputs this phase or an earlier one carries;
3. with a checkpoint's last slice, the offsets of every fetch handled before it began are
   acked (Faust's commit loop commits them).

Alerts therefore leave with their fetch, while a customer seen many times between checkpoints
costs one state write, and no single fetch pays for a whole checkpoint (10,000 changed states
cost ~100 ms to encode and hand over: a stall that every alert behind it waited for). At most
``durable_in_flight`` durable phases run behind the scoring; :meth:`ScoringPipeline.drain`
writes everything changed, acks everything handled and waits (a revocation calls it before the
partitions move).

Delivery guarantee: at least once, and a redelivery changes nothing. A state that marks an
event as seen is stored only after that event's outputs are durable, so a redelivered event
(after a crash anywhere in between) either finds its state unchanged and runs again, or finds
it seen and its outputs already delivered. Alert ids are deterministic, so a re-sent alert is
recognisable downstream.

Erase requests (:mod:`schemas.erase`, on the keyed topic only, in partition order with the
events forwarded there) delete the id's state (a changelog tombstone), its own identity link
and the links to it still in memory (identity changelog tombstones; point lookups, never a scan
of the identity table) and its latest score (a tombstone on the scores
topic, which also confirms the request to ``cxsignals erase``), and force a checkpoint, so that
the state tombstones follow the confirmation in the same durable phase.

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
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from schemas.erase import (
    ERASE_HEADER,
    ERASE_REQUEST_HEADER,
    ERASE_RESULT_HEADER,
    EraseRequest,
    EraseResult,
)
from schemas.topics import TopicNames
from streams import metrics
from streams.batch_observer import BatchObserver
from streams.config import CHECKPOINT_EVENTS, CHECKPOINT_INTERVAL_MS
from streams.core.deadletter import dead_letter_headers, fit_dead_letter_value
from streams.core.identity import resolve
from streams.core.validation import LOG_APPEND_TIME, ErrorCode, Invalid, validate_event
from streams.partitioner import customer_partition
from streams.processing import Output, PendingWrite, Processor

log = logging.getLogger(__name__)

# A partition is live (idle customers' risk may be judged as of now) when its latest scored
# event happened at most LIVE_LAG_S before now, or when it delivered nothing for DRAINED_S
# (docs/scoring.md, "Time-aware risk").
LIVE_LAG_S = 60.0
DRAINED_S = 5.0
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# A tick on the keyed topic, as the v1 worker sent them (ticks now run in place): a deployed
# keyed topic may still hold some after an upgrade.
LEGACY_TICK_HEADER = "cx-tick"


class KeyValueTable(Protocol):
    """A changelogged table by partition (the worker's is
    :class:`~streams.faust_internals.TablePartitions`)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def get_any(self, key: bytes) -> bytes | None: ...

    def put_many(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None: ...

    def changelog_record(self, partition: int, key: bytes, value: bytes | None) -> Any: ...

    def delivered(self, delivery: Any) -> None: ...

    def persist_offsets(self) -> None: ...

    def partitions_of(self, key: bytes) -> list[int]: ...


class Delivery(Protocol):
    """Records handed to the producer together: ``future`` resolves once the broker has them;
    ``indices`` are their positions in the list handed over."""

    @property
    def future(self) -> asyncio.Future[Any]: ...

    @property
    def indices(self) -> list[int]: ...


# Hands records to the producer (whole batches per topic partition); returns the deliveries.
SendRecords = Callable[[Sequence[Any]], Awaitable[Sequence[Delivery]]]
# (the fetch's topic partition, first offset, last offset)
Ack = Callable[[Any, int, int], None]


CHECKPOINT_SLICE_STATES = 1000
"""States a checkpoint encodes and writes per fetch: a checkpoint of 10,000 changed states
spreads over ten fetches instead of stalling one by ~100 ms (encoding, the first risk look,
the changelog records); its acks go with its last slice."""
YIELD_EVERY_RECORDS = 2000
"""Records of a fetch scored between two hand-overs of its outputs (and turns of the event
loop): a backlog fetch of CX_BATCH_MAX_EVENTS (6,000) records then sends its alerts as three
fetches of 2,000 did."""

# How a fetch's hand-over treats the checkpoint.
NO_CHECKPOINT = 0  # outputs; and the next slice of a checkpoint under way
CHECKPOINT_DUE = 1  # start a checkpoint unless one is under way
CHECKPOINT_NOW = 2  # everything changed and handled so far, in this durable phase (drain, erase)


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    partitions: int
    max_event_bytes: int
    max_future_skew_s: float
    ticks_per_fetch: int = 1000
    # States are written (once per customer) and offsets acked at a checkpoint: after this
    # long or this many events since the last one. Outputs go out with every fetch.
    checkpoint_s: float = CHECKPOINT_INTERVAL_MS / 1000
    checkpoint_events: int = CHECKPOINT_EVENTS
    # Durable phases that may wait for the broker while later fetches are scored. With 4 the
    # worker waited for broker acks in a backlog (its core 83-90 % busy, the broker sharing
    # the other core with the sink and ClickHouse); with 16, 93-97 % (e2e +12 %).
    durable_in_flight: int = 16
    checkpoint_slice_states: int = CHECKPOINT_SLICE_STATES
    # A fetch of a backlog (up to CX_BATCH_MAX_EVENTS records) is scored in one pass, but
    # every this many records its outputs so far are handed over and the event loop gets a
    # turn (the producer's sender and earlier durable phases run): alerts and the loop lag of
    # a large fetch are those of fetches this size.
    yield_every_records: int = YIELD_EVERY_RECORDS


class ScoringPipeline:
    def __init__(self, processor: Processor, states: KeyValueTable, identities: KeyValueTable,
                 send: SendRecords, ack: Ack, topics: TopicNames, keyed_topic: str,
                 limits: PipelineLimits, send_states: SendRecords | None = None) -> None:
        self.processor = processor
        self.states = states
        self.identities = identities
        self.send = send
        # The state changelog's records (states, identity links): its own producer in a
        # worker (streams.faust_internals.BatchProducer), the same function in tests.
        self.send_states = send if send_states is None else send_states
        self.ack = ack
        self.topics = topics
        self.keyed_topic = keyed_topic
        self.limits = limits
        # anonymous id -> (customer, partition); a customer of None masks an erased link until
        # its tombstones (in _unlinks) are stored.
        self._links: dict[str, tuple[str | None, int]] = {}
        # Links handed to the changelog but not stored locally yet.
        self._links_in_flight: dict[str, tuple[str | None, int]] = {}
        # Erased links: (anonymous id, identity changelog partition) tombstones to write.
        self._unlinks: list[tuple[str, int]] = []
        self._erased = False  # an erase in this fetch: checkpoint now
        # Stored links looked up during the current fetch (anonymous id -> customer or None).
        # Exact: a fetch is scored in one synchronous pass, during which nothing else writes
        # the identity store; cleared at each fetch (other workers' links arrive in between).
        self._stored_links: dict[str, str | None] = {}
        self._consumed = {name: metrics.child(metrics.messages_consumed, name)
                          for name in (topics.touchpoints, keyed_topic)}
        self._lag = BatchObserver(metrics.processing_lag)
        self._score = BatchObserver(metrics.experience_score)
        self._risk = BatchObserver(metrics.churn_risk)
        self.tick_partitions: Callable[[], Sequence[int]] = lambda: ()
        # The latest durable phase (each waits for the one before it) and those not awaited yet.
        self._inflight: asyncio.Future[None] | None = None
        self._pending: deque[asyncio.Future[None]] = deque()
        # Offsets handled since the last checkpoint: acked once their states are durable.
        self._unacked: list[tuple[Any, int, int]] = []
        # The checkpoint under way: customers whose states are still to be written, and the
        # acks (fetches handled before it began) that go with its last slice.
        self._checkpoint_todo: list[str] | None = None
        self._checkpoint_next = 0
        self._checkpoint_acks: list[tuple[Any, int, int]] = []
        self._since_checkpoint = 0
        self._checkpoint_at = time.monotonic()
        # Per partition: wall time of its latest fetch with records, and the event time of
        # its latest scored event (whether it is live, for the timer's risk looks).
        self._arrived: dict[int, float] = {}
        self._latest_event: dict[int, datetime] = {}

    # -- one fetch ----------------------------------------------------------------------------

    async def handle(self, fetch: Mapping[Any, Sequence[Any]]) -> int:
        """Score a whole fetch (records per topic partition) and make it durable; returns the
        number of records handled."""
        started = time.perf_counter()
        now = datetime.now(timezone.utc)
        now_s = now.timestamp()
        outputs: list[Output] = []
        handled = 0
        self._stored_links = {}
        counts: dict[str, int] = {}
        yield_every = self.limits.yield_every_records
        since_yield = 0
        for tp, records in fetch.items():
            if not records:
                continue
            handled += len(records)
            keyed = tp.topic == self.keyed_topic
            self._consumed[tp.topic].inc(len(records))
            self._arrived[tp.partition] = now_s
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
                since_yield += 1
                if since_yield >= yield_every:
                    since_yield = 0
                    # The outputs so far leave now (a durable phase of outputs only), not
                    # after the whole fetch; states and acks still wait for its end.
                    if outputs:
                        await self._start_phase(outputs, [], [], [], started)
                        outputs = []
                    await asyncio.sleep(0)
                    # A durable phase that ran meanwhile may have stored (or erased) links:
                    # the links looked up so far are looked up again.
                    self._stored_links = {}
        self._ticks(now, outputs)
        for event_type, n in counts.items():
            metrics.child(metrics.events_processed, event_type).inc(n)
        for observer in (self._lag, self._score, self._risk):
            observer.flush()
        self._unacked.extend((tp, records[0].offset, records[-1].offset)
                             for tp, records in fetch.items() if records)
        if handled:
            metrics.batch_messages.observe(handled)
            self._since_checkpoint += handled
        limits = self.limits
        if self._erased:
            checkpoint = CHECKPOINT_NOW
        elif (self._since_checkpoint >= limits.checkpoint_events
              or time.monotonic() - self._checkpoint_at >= limits.checkpoint_s):
            checkpoint = CHECKPOINT_DUE
        else:
            checkpoint = NO_CHECKPOINT
        self._erased = False
        await self._hand_over(outputs, checkpoint, started)
        return handled

    async def _hand_over(self, outputs: list[Output], checkpoint: int, started: float) -> None:
        """Start the durable phase of a fetch's outputs and of the checkpoint's part in it.

        A checkpoint begins when one is due and none is under way: it takes the customers whose
        states changed, the identity links learnt and the acks of every fetch handled so far.
        Its states are then encoded and written :attr:`PipelineLimits.checkpoint_slice_states`
        per fetch (each slice in that fetch's durable phase, after its outputs, so a state is
        never stored before the outputs of the events it has seen); its acks go with the last
        slice. ``CHECKPOINT_NOW`` writes everything changed and acks everything handled, in
        this phase."""
        writes: list[PendingWrite] = []
        link_records: list[Any] = []
        acks: list[tuple[Any, int, int]] = []
        processor = self.processor
        if checkpoint == CHECKPOINT_NOW:
            self._restart_checkpoint_clock()
            writes = processor.pending_writes()
            link_records = self._link_records()
            acks = self._checkpoint_acks
            acks.extend(self._unacked)
            self._unacked, self._checkpoint_acks = [], []
            self._checkpoint_todo = None
        else:
            if checkpoint == CHECKPOINT_DUE and self._checkpoint_todo is None:
                self._restart_checkpoint_clock()
                self._checkpoint_todo = processor.unhanded_customers()
                self._checkpoint_next = 0
                link_records = self._link_records()
                self._checkpoint_acks, self._unacked = self._unacked, []
            todo = self._checkpoint_todo
            if todo is not None:
                first = self._checkpoint_next
                last = first + self.limits.checkpoint_slice_states
                writes = processor.pending_writes(customers=todo[first:last])
                self._checkpoint_next = last
                if last >= len(todo):
                    acks, self._checkpoint_acks = self._checkpoint_acks, []
                    self._checkpoint_todo = None
        await self._start_phase(outputs, writes, link_records, acks, started)

    def _restart_checkpoint_clock(self) -> None:
        """A checkpoint begins: the next is due ``checkpoint_s`` or ``checkpoint_events``
        from now."""
        self._checkpoint_at = time.monotonic()
        self._since_checkpoint = 0

    def _link_records(self) -> list[Any]:
        """The identity changelog records of the links learnt and erased since the last
        checkpoint (tombstones first: a link learnt again after an erase comes after them)."""
        identities = self.identities
        link_records = [identities.changelog_record(partition, anonymous.encode(), None)
                        for anonymous, partition in self._unlinks]
        self._unlinks = []
        for anonymous, (customer, partition) in self._links.items():
            if customer is not None:
                link_records.append(identities.changelog_record(
                    partition, anonymous.encode(), customer.encode()))
            # stored once the changelog has it; looked up from here meanwhile
            self._links_in_flight[anonymous] = (customer, partition)
        self._links = {}
        return link_records

    async def _start_phase(self, outputs: list[Output], writes: list[PendingWrite],
                           link_records: list[Any], acks: list[tuple[Any, int, int]],
                           started: float) -> None:
        """Start a durable phase (see :meth:`_durable`) behind the previous one."""
        if not (outputs or writes or link_records or acks):
            return
        previous = self._inflight
        self._inflight = asyncio.ensure_future(
            self._durable(previous, outputs, writes, link_records, acks, started))
        # A few durable phases may wait for the broker while the next fetches are scored: a
        # slow acknowledgement then delays acks, not scoring. Beyond that, wait (bounded memory).
        pending = self._pending
        pending.append(self._inflight)
        while pending and (pending[0].done() or len(pending) > self.limits.durable_in_flight):
            await pending.popleft()

    async def drain(self) -> None:
        """Checkpoint now and return once every fetch handled so far is durable and acked
        (before a revocation commits)."""
        await self._hand_over([], CHECKPOINT_NOW, time.perf_counter())
        while self._pending:  # every durable phase is here, in order
            await self._pending.popleft()

    def _one(self, record: Any, keyed: bool, now: datetime, outputs: list[Output],
             counts: dict[str, int]) -> None:
        if keyed and not record.value and _has_header(record.headers, LEGACY_TICK_HEADER):
            return  # deadlines are checked in place now
        if keyed and _has_header(record.headers, ERASE_HEADER):
            self._erase(record, now, outputs)
            return
        limits = self.limits
        result: Any = validate_event(record.value, now=now, max_bytes=limits.max_event_bytes,
                                     max_future_skew_s=limits.max_future_skew_s,
                                     record_ts_ms=record.timestamp
                                     if record.timestamp_type == LOG_APPEND_TIME else None)
        if isinstance(result, Invalid):
            outputs.append(self._dead_letter(record, result, now))
            return
        customer_id, link = resolve(result, self._linked_customer)
        if link is not None:
            self._remember_link(link[0], link[1], record.partition)
        elif result.customer_id is None and customer_id != result.anonymous_id:
            # A visitor's event that followed a link: if it was scored as the visitor's own
            # before the link was learnt (this is a redelivery), it is a duplicate.
            anonymous = result.anonymous_id
            home = customer_partition(anonymous, limits.partitions)
            if home == record.partition and self.processor.has_seen(anonymous, home, result):
                metrics.duplicates_skipped.inc()
                return
        partition = customer_partition(customer_id, limits.partitions)
        if partition != record.partition and not keyed:
            outputs.append(Output(self.keyed_topic, customer_id.encode(), record.value,
                                  partition=partition))
            return
        # (a keyed record on another partition means the partition count changed: score it
        # where it is rather than bounce it forever)
        outcome = self.processor.process(customer_id, record.partition, result, now,
                                         raw=record.value)
        if outcome is None:
            return
        self._latest_event[record.partition] = result.occurred_at
        event_type = result.event_type
        counts[event_type] = counts.get(event_type, 0) + 1
        self._lag.observe(max(0.0, (now - result.occurred_at).total_seconds()))
        state = outcome.state
        self._score.observe(state.score)
        self._risk.observe(state.risk)
        if (outcome.alerts or outcome.score_update is not None or outcome.policy_events
                or outcome.control_alerts):
            outputs.extend(self.processor.outputs(outcome, customer_id,
                                                  kafka_ts_s=record.timestamp / 1000))

    def _ticks(self, now: datetime, outputs: list[Output]) -> None:
        now_s = now.timestamp()
        processor = self.processor
        budget = self.limits.ticks_per_fetch
        for partition in self.tick_partitions():
            live = self.is_live(partition, now_s)
            for customer_id in processor.deadlines.pop_due(partition, now_s, budget):
                budget -= 1
                try:
                    outcome = processor.tick(customer_id, partition, now, live=live)
                except Exception:
                    metrics.processing_errors.labels("tick").inc()
                    log.exception("tick of a customer on partition %d failed", partition)
                    continue
                if outcome is not None:
                    outputs.extend(processor.outputs(outcome, customer_id, kafka_ts_s=None))
            for customer_id in processor.expiry.pop_due(partition, now_s, max(0, budget)):
                budget -= 1
                processor.expire(customer_id, partition, now)
            if budget <= 0:
                return

    # -- erase ----------------------------------------------------------------------------------

    def _erase(self, record: Any, now: datetime, outputs: list[Output]) -> None:
        """Handle an erase request (see the module docstring); an unreadable one is
        dead-lettered as ``schema_violation``."""
        try:
            request = EraseRequest.from_json(record.value or b"")
        except ValueError as exc:
            outputs.append(self._dead_letter(
                record, Invalid(ErrorCode.schema_violation, f"erase request: {exc}"), now))
            return
        subject = request.subject
        state_deleted = self.processor.erase(subject, record.partition)
        links_deleted = self._unlink(subject)
        result = EraseResult(state_deleted=state_deleted, links_deleted=links_deleted)
        outputs.append(Output(self.topics.scores, subject.encode(), None,
                              [(ERASE_REQUEST_HEADER, request.request_id.encode()),
                               (ERASE_RESULT_HEADER, result.to_json())],
                              on_sent=metrics.erase_requests.inc))
        self._erased = True
        log.info("erase request %s handled on partition %d: state %s, %d identity links",
                 request.request_id, record.partition,
                 "deleted" if state_deleted else "absent", links_deleted)

    def _unlink(self, subject: str) -> int:
        """Delete the identity links of ``subject``: its own stored link (``subject`` as an
        anonymous id: a point lookup per partition) and every link from or to it that is in
        flight to the changelog or learnt in this checkpoint (small in-memory dicts). Stored
        links *to* a customer are not looked for (that would scan the whole identity table on
        the event loop): ``cxsignals erase`` sends a request per linked anonymous id, whose own
        link goes here. Returns the number of links deleted."""
        key = subject.encode()
        tombstones = [(subject, partition)
                      for partition in self.identities.partitions_of(key)]
        # stored links already erased, their tombstones not stored yet
        tombstones = [t for t in tombstones if not self._erased_link(t[0])]
        for anonymous, (customer, partition) in list(self._links_in_flight.items()):
            if customer is not None and subject in (anonymous, customer):
                tombstones.append((anonymous, partition))
        erased = {anonymous for anonymous, _partition in tombstones}
        for anonymous, (customer, _partition) in list(self._links.items()):
            if customer is not None and subject in (anonymous, customer):
                del self._links[anonymous]  # never written: nothing to delete
                erased.add(anonymous)
        for anonymous, partition in tombstones:
            self._links[anonymous] = (None, partition)  # masks the stored link until durable
        self._unlinks.extend(dict.fromkeys(tombstones))
        return len(erased)

    def is_live(self, partition: int, now_s: float) -> bool:
        """Whether ``partition`` is caught up with its producers: its latest scored event
        happened at most ``LIVE_LAG_S`` before now, or it delivered nothing for ``DRAINED_S``
        (a partition not heard of yet counts from now). While it catches up (a backlog after
        an outage, a backfill of old events), a customer's later events may still be on their
        way, so its risk is not judged as of now."""
        arrived = self._arrived.get(partition)
        if arrived is None:
            self._arrived[partition] = now_s
            return False
        if now_s - arrived >= DRAINED_S:
            return True
        latest = self._latest_event.get(partition)
        return latest is not None and now_s - latest.timestamp() <= LIVE_LAG_S

    # -- identity links -------------------------------------------------------------------------

    def _erased_link(self, anonymous_id: str) -> bool:
        pending = self._links.get(anonymous_id) or self._links_in_flight.get(anonymous_id)
        return pending is not None and pending[0] is None

    def _linked_customer(self, anonymous_id: str) -> str | None:
        pending = self._links.get(anonymous_id) or self._links_in_flight.get(anonymous_id)
        if pending is not None:
            return pending[0]
        stored = self._stored_links
        if anonymous_id in stored:
            return stored[anonymous_id]
        linked = self.identities.get_any(anonymous_id.encode())
        customer = linked.decode() if linked else None
        stored[anonymous_id] = customer
        return customer

    def _remember_link(self, anonymous: str, customer: str, partition: int) -> None:
        if self._linked_customer(anonymous) != customer:
            self._links[anonymous] = (customer, partition)

    # -- making it durable ----------------------------------------------------------------------

    def _dead_letter(self, record: Any, invalid: Invalid, now: datetime) -> Output:
        headers = dead_letter_headers(invalid, topic=record.topic, partition=record.partition,
                                      offset=record.offset, received_at=now)
        value, headers = fit_dead_letter_value(record.value, headers)
        return Output(self.topics.dead_letters, record.key, value, headers,
                      on_sent=metrics.child(metrics.dead_letters, invalid.code.value).inc)

    async def _durable(self, previous: asyncio.Future[None] | None, outputs: list[Output],
                       writes: list[PendingWrite], link_records: list[Any],
                       acks: list[tuple[Any, int, int]], started: float) -> None:
        """Outputs first, then (after the previous phase is durable) states and links, then
        the acks; returns when the broker has all of them."""
        if outputs:
            await self._deliver("send", outputs, _no_delivery, self.send)
        if previous is not None:
            await previous
        states, identities = self.states, self.identities
        state_records = [states.changelog_record(write.partition, write.customer_id.encode(),
                                                 write.value) for write in writes]
        records = [*link_records, *state_records]
        if records:
            def delivered(delivery: Delivery) -> None:
                states.delivered(delivery)
                identities.delivered(delivery)

            await self._deliver("state", records, delivered, self.send_states)
            # Stored locally only once the changelog has them: a kill -9 in between leaves the
            # local store behind the changelog (recovery replays it), never ahead of it (the
            # redelivered events would be seen as duplicates and never reach the changelog).
            _store(identities, link_records)
            in_flight = self._links_in_flight
            for record in link_records:
                anonymous = record.key.decode()
                customer = record.value.decode() if record.value is not None else None
                current = in_flight.get(anonymous)
                if current is not None and current[0] == customer:
                    del in_flight[anonymous]
            _store(states, state_records)
            processor = self.processor
            for write in writes:
                processor.written(write)
            states.persist_offsets()
            identities.persist_offsets()
        ack = self.ack
        for tp, first, last in acks:
            ack(tp, first, last)
        metrics.batch_flush_seconds.observe(time.perf_counter() - started)

    async def _deliver(self, stage: str, records: Sequence[Any],
                       delivered: Callable[[Delivery], None], send: SendRecords) -> None:
        """Hand ``records`` over to ``send`` until the broker has every one; a failed
        hand-over or delivery is retried (the failed records only) with capped exponential
        backoff."""
        pending = list(range(len(records)))
        delay_s = RETRY_FIRST_S
        while pending:
            subset = [records[i] for i in pending]
            failed: list[int] = []
            deliveries: Sequence[Delivery] = ()
            try:
                deliveries = await send(subset)
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.batch_retries.labels(stage).inc()
                log.exception("batch %s failed; retrying in %.1f s", stage, delay_s)
                failed = pending
            for delivery in deliveries:
                try:
                    await _wait_logged(delivery, stage)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    metrics.batch_retries.labels("delivery").inc()
                    log.exception("batch %s not delivered; sending again in %.1f s", stage,
                                  delay_s)
                    failed.extend(pending[i] for i in delivery.indices)
                    continue
                delivered(delivery)
                for i in delivery.indices:
                    on_sent = getattr(subset[i], "on_sent", None)
                    if on_sent is not None:
                        on_sent()
            if not failed:
                return
            pending = sorted(failed)
            await asyncio.sleep(delay_s)
            delay_s = min(RETRY_MAX_S, delay_s * 2)


def _no_delivery(delivery: Delivery) -> None:
    pass


def _store(table: KeyValueTable, records: Sequence[Any]) -> None:
    """Store what the changelog records of ``table`` hold (a value of None deletes the key),
    one write batch per partition."""
    batches: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for record in records:
        batches.setdefault(record.partition, []).append((record.key, record.value))
    for partition, batch in batches.items():
        table.put_many(partition, batch)


STUCK_LOG_S = 30.0


async def _wait_logged(delivery: Delivery, stage: str) -> None:
    """Wait for a delivery; say so every ``STUCK_LOG_S`` while the broker does not answer
    (the producer keeps retrying meanwhile)."""
    waited_s = 0.0
    while True:
        try:
            await asyncio.wait_for(asyncio.shield(delivery.future), STUCK_LOG_S)
            return
        except asyncio.TimeoutError:
            waited_s += STUCK_LOG_S
            metrics.batch_retries.labels("delivery").inc()
            log.warning("batch %s: %d records to %s[%s] not acknowledged by the broker for "
                        "%.0f s; still waiting", stage, len(delivery.indices),
                        getattr(delivery, "topic", "?"), getattr(delivery, "partition", "?"),
                        waited_s)


def _has_header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bool:
    return any(pair[0] == name for pair in headers or ())
