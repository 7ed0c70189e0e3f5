"""Customer states around the pure engine: load, cache, keep dirty until written, deadlines.

Faust-free: the worker hands it a function that reads a stored state of a partition; the unit
tests hand it a dict. A state changed by an event stays in memory (``pending_writes``) until the
caller has written it and calls :meth:`Processor.written`: the caller acks the messages of a
batch only after that, so a committed offset never passes a state that was not stored.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from schemas.alerts import AlertKind
from schemas.topics import TopicNames
from streams import metrics
from streams.core.engine import Outcome
from streams.core.state import CustomerState, event_id_hash
from streams.core.validation import decode_valid
from streams.deadlines import DeadlineIndex
from streams.expiry import ExpiryIndex, last_active_s

log = logging.getLogger(__name__)

ReadState = Callable[[int, bytes], "bytes | None"]
# A look at an idle customer's risk that is due while its partition catches up is retried
# this much later (streams/pipeline.py decides when a partition is live).
CATCH_UP_RETRY_S = 5.0


class ScoringEngine(Protocol):
    """What the processor needs of :class:`streams.core.engine.Engine` (tests wrap one)."""

    def process(self, state: CustomerState | None, customer_id: str, event: Any, *,
                now: datetime) -> Outcome: ...

    def tick(self, state: CustomerState, customer_id: str, *, now: datetime,
             idle_risk: bool = True) -> Outcome: ...

    def risk_wakeup_s(self, state: CustomerState, now_s: float) -> float | None: ...

    def risk_first_look_s(self, state: CustomerState, now_s: float) -> float | None: ...


class Output:
    """One record to hand to Kafka (``partition`` None: the producer's partitioner decides).

    A plain class rather than a dataclass (one or more per scored event): compiled
    (streams/core/native.py), its ``__init__`` is native, where a dataclass's is interpreted."""

    __slots__ = ("topic", "key", "value", "headers", "partition", "on_sent")

    def __init__(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None, partition: int | None = None,
                 on_sent: Callable[[], None] | None = None) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.partition = partition
        self.on_sent = on_sent

    def __repr__(self) -> str:
        return f"Output({self.topic!r}, {self.key!r}, partition={self.partition!r})"


class PendingWrite:
    """A customer's serialized state to store in ``partition`` (None: delete it, an expired
    or erased customer); ``change`` numbers the change."""

    __slots__ = ("customer_id", "value", "partition", "change")

    def __init__(self, customer_id: str, value: bytes | None, partition: int,
                 change: int) -> None:
        self.customer_id = customer_id
        self.value = value
        self.partition = partition
        self.change = change

    def __repr__(self) -> str:
        return f"PendingWrite({self.customer_id!r}, change={self.change})"


class Processor:
    """Runs the engine for one customer at a time; keeps changed states until written.

    Failure behaviour: when the engine raises half-way through an event, the customer's state
    is rebuilt from its latest encoding not written yet (else the stored state) and the events
    applied since (their outputs were already taken), and the error is raised to the caller,
    which dead-letters the event.

    Memory: with the cache on, the decoded states are the cache's (``max_cached_states``): a
    changed state the cache evicts is kept encoded until written (with the cache off, a
    changed state is encoded when it is handed out for writing).

    Bounded state: a customer inactive for the TTL of ``expiry`` is deleted by :meth:`expire`
    (a pending write of None: a RocksDB delete and a changelog tombstone).
    """

    def __init__(self, engine: ScoringEngine, read_state: ReadState, topics: TopicNames, *,
                 deadlines: DeadlineIndex | None = None, expiry: ExpiryIndex | None = None,
                 max_cached_states: int = 10_000) -> None:
        self.engine = engine
        self.read_state = read_state
        self.topics = topics
        self.deadlines = deadlines if deadlines is not None else DeadlineIndex()
        self.expiry = expiry if expiry is not None else ExpiryIndex(0)
        # Decoded states of recently seen customers. Only this worker changes the states of its
        # partitions, so the cache is exact while the assignment holds; forget_states() drops
        # it on every rebalance.
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self.max_cached_states = max_cached_states
        # Changed since written: customer id -> (state, partition, change number); a state of
        # None is a deletion (an expired customer). A changed state outside the cache is kept
        # encoded (bytes, ~0.8 KiB against ~6 KiB decoded at ten events): it is encoded when
        # the cache evicts it (or when it is handed out), so the decoded states in memory are
        # at most the cache's. In a backlog of many customers most of a checkpoint's changed
        # states are outside the cache (--full bench: ~12,000 of ~22,000 decoded states).
        self._dirty: dict[str, tuple[CustomerState | bytes | None, int, int]] = {}
        self._changes = 0
        # The write of each dirty state already handed out (its change number and value).
        self._handed: dict[str, PendingWrite] = {}
        # The events applied to each dirty state, to rebuild it if the engine fails half-way:
        # their message values when the caller passed them (bytes: one object each, freed at
        # once when the state is written, where a decoded event held a dozen; ~6 % of the
        # pipeline's CPU, bench.pipeline_bench), else the events themselves. Only those
        # applied since the state was last encoded (evicted or handed out): a rebuild starts
        # from that encoding (``_base``), else from the stored state.
        self._applied: dict[str, list[Any]] = {}
        self._base: dict[str, bytes] = {}
        # Expired customers whose deletion is not stored yet -> the change that deleted them:
        # a rebuild starts from nothing, not from the stored (stale) state.
        self._deleted: dict[str, int] = {}

    def forget_states(self) -> None:
        """Drop the decoded-state cache (partitions moved: the store is the truth again).
        States not written yet stay: their messages are not acked."""
        self._states.clear()

    @property
    def dirty_customers(self) -> int:
        return len(self._dirty)

    def _load(self, customer_id: str, partition: int) -> CustomerState | None:
        pending = self._dirty.get(customer_id)
        if pending is not None:
            held = pending[0]
            if not isinstance(held, bytes):
                return held
            # Changed, evicted and encoded, not stored yet: decoded again (the same change).
            decoded = CustomerState.from_bytes(held)
            self._dirty[customer_id] = (decoded, pending[1], pending[2])
            self._cache(customer_id, decoded)
            return decoded
        state = self._states.get(customer_id)
        if state is not None:
            self._states.move_to_end(customer_id)
            return state
        raw = self.read_state(partition, customer_id.encode())
        return CustomerState.from_bytes(raw) if raw else None

    def _changed(self, customer_id: str, partition: int, state: CustomerState) -> None:
        self._changes += 1
        self._dirty[customer_id] = (state, partition, self._changes)
        self._cache(customer_id, state)
        self.deadlines.set(partition, customer_id, state.next_wakeup_s())

    def _cache(self, customer_id: str, state: CustomerState) -> None:
        """Put a decoded state in the cache; a changed state it evicts is kept encoded."""
        if self.max_cached_states <= 0:
            return
        states = self._states
        states[customer_id] = state
        states.move_to_end(customer_id)
        if len(states) > self.max_cached_states:
            evicted_id, evicted = states.popitem(last=False)
            pending = self._dirty.get(evicted_id)
            if pending is not None and pending[0] is evicted:
                self._dirty[evicted_id] = (self._encoded(evicted_id, evicted, pending[1],
                                                         pending[2], time.time()),
                                           pending[1], pending[2])

    def _encoded(self, customer_id: str, state: CustomerState, partition: int, change: int,
                 now_s: float) -> bytes:
        """A changed state's value for writing: the one handed out for this change, or the
        state encoded now after its first look at the churn risk is scheduled."""
        handed = self._handed.get(customer_id)
        if handed is not None and handed.change == change and handed.value is not None:
            return handed.value
        if state.risk_wake_s is None:
            state.risk_wake_s = self.engine.risk_first_look_s(state, now_s)
            if state.risk_wake_s is not None:
                self.deadlines.set(partition, customer_id, state.next_wakeup_s())
        value = state.to_bytes()
        self._base[customer_id] = value
        self._applied.pop(customer_id, None)
        return value

    def _rebuild(self, customer_id: str, partition: int, now: datetime) -> None:
        self._states.pop(customer_id, None)
        self._handed.pop(customer_id, None)
        pending = self._dirty.pop(customer_id, None)
        applied = self._applied.pop(customer_id, [])
        base = self._base.pop(customer_id, None)
        if pending is None:
            return
        deleted = customer_id in self._deleted
        if base is not None:
            raw: bytes | None = base
        else:
            raw = None if deleted else self.read_state(partition, customer_id.encode())
        state = CustomerState.from_bytes(raw) if raw else None
        try:
            for kept in applied:
                event = decode_valid(kept) if isinstance(kept, bytes) else kept
                state = self.engine.process(state, customer_id, event, now=now).state
        except Exception:
            log.exception("rebuilding the state of %s failed: it stays as last written",
                          customer_id)
            return
        if state is not None:
            self._changed(customer_id, partition, state)
            self._applied[customer_id] = applied
            if base is not None:
                self._base[customer_id] = base
        elif deleted:  # the deletion is still to be stored
            self._changes += 1
            self._dirty[customer_id] = (None, partition, self._changes)
            self._applied[customer_id] = []

    def has_seen(self, customer_id: str, partition: int, event: Any) -> bool:
        """Whether the customer's state has already applied ``event`` (by its id)."""
        state = self._load(customer_id, partition)
        return state is not None and event_id_hash(event.event_id) in state.seen

    def process(self, customer_id: str, partition: int, event: Any,
                now: datetime, raw: bytes | None = None) -> Outcome | None:
        """Apply one valid event; None when it was a redelivery (nothing changes). ``raw``:
        the message value it was validated from, kept instead of the event until the state
        is written (a rebuild decodes it again)."""
        state = self._load(customer_id, partition)
        active_before = last_active_s(state)
        try:
            outcome = self.engine.process(state, customer_id, event, now=now)
        except Exception:
            self._rebuild(customer_id, partition, now)
            raise
        if outcome.duplicate:
            metrics.duplicates_skipped.inc()
            return None
        self.expiry.moved(partition, customer_id, active_before, last_active_s(outcome.state))
        self._changed(customer_id, partition, outcome.state)
        kept = event if raw is None else raw
        applied = self._applied.get(customer_id)
        if applied is None:
            self._applied[customer_id] = [kept]
        else:
            applied.append(kept)
        if outcome.late_dropped:
            metrics.late_events_dropped.inc()
        return outcome

    def tick(self, customer_id: str, partition: int, now: datetime, *,
             live: bool = True) -> Outcome | None:
        """Run the engine's timer for an idle customer (deadlines passed in wall time).

        ``live`` False: the customer's partition is catching up (its latest events are far
        behind the wall clock: a backlog or a backfill), so events that would lower this
        customer's risk may still be on their way; a look at the risk due now waits
        ``CATCH_UP_RETRY_S`` (in memory only; its deadlines fire as usual)."""
        state = self._load(customer_id, partition)
        if state is None:
            return None
        now_s = now.timestamp()
        risk_wake = state.risk_wake_s
        if not live and risk_wake is not None and risk_wake <= now_s:
            deadline = state.deadline_wakeup_s()
            if deadline is None or deadline > now_s:  # nothing else to do: no state change
                retry = now_s + CATCH_UP_RETRY_S
                self.deadlines.set(partition, customer_id,
                                   retry if deadline is None else min(deadline, retry))
                return None
        try:
            outcome = self.engine.tick(state, customer_id, now=now, idle_risk=live)
            if live:
                # The next look at the risk, after this one (a search: up to 19 evaluations).
                state.risk_wake_s = self.engine.risk_wakeup_s(state, now_s)
        except Exception:
            self._rebuild(customer_id, partition, now)
            raise
        self._changed(customer_id, partition, outcome.state)
        if not live and risk_wake is not None and risk_wake <= now_s:
            deadline = state.deadline_wakeup_s()
            retry = now_s + CATCH_UP_RETRY_S
            self.deadlines.set(partition, customer_id,
                               retry if deadline is None else min(deadline, retry))
        return outcome

    def expire(self, customer_id: str, partition: int, now: datetime) -> bool:
        """Delete the customer's state if they were inactive for the TTL (True), else track
        them again for the day they go stale (False). The deletion is a pending write."""
        state = self._load(customer_id, partition)
        if state is None:
            return False
        active_s = last_active_s(state)
        if active_s is not None and active_s + self.expiry.ttl_s > now.timestamp():
            self.expiry.add(partition, customer_id, active_s)
            return False
        self._states.pop(customer_id, None)
        self.deadlines.set(partition, customer_id, None)
        self._changes += 1
        self._dirty[customer_id] = (None, partition, self._changes)
        self._applied[customer_id] = []
        self._base.pop(customer_id, None)
        self._deleted[customer_id] = self._changes
        metrics.states_expired.inc()
        return True

    def erase(self, customer_id: str, partition: int) -> bool:
        """Forget the customer (an erase request): the state is deleted like an expired one (a
        pending write of None: a RocksDB delete and a changelog tombstone, written even when
        there was no state, so that erasing twice is harmless), and dropped from the cache,
        the deadline and expiry indexes; the remembered event ids (dedupe) go with the state.
        The next event of the id starts a fresh state. True when there was a state."""
        state = self._load(customer_id, partition)
        self._states.pop(customer_id, None)
        self.deadlines.set(partition, customer_id, None)
        if state is not None:
            self.expiry.discard(partition, customer_id, last_active_s(state))
        self._changes += 1
        self._dirty[customer_id] = (None, partition, self._changes)
        self._applied[customer_id] = []
        self._base.pop(customer_id, None)
        self._deleted[customer_id] = self._changes
        return state is not None

    def stored_wakeup_s(self, state: CustomerState, now_s: float) -> float | None:
        """The deadline of a stored state, for an index rebuilt after a rebalance: its stored
        schedule, or, if it has none for its risk (written before time-aware risk or with it
        off), a first look (``Engine.risk_first_look_s``: at most one risk evaluation)."""
        if state.risk_wake_s is None:
            state.risk_wake_s = self.engine.risk_first_look_s(state, now_s)
        return state.next_wakeup_s()

    def unhanded_customers(self) -> list[str]:
        """The customers whose state changed since it was last handed out for writing."""
        handed = self._handed
        unhanded = []
        for customer_id, (_state, _partition, change) in self._dirty.items():
            write = handed.get(customer_id)
            if write is None or write.change != change:
                unhanded.append(customer_id)
        return unhanded

    def pending_writes(self, now_s: float | None = None,
                       customers: Sequence[str] | None = None) -> list[PendingWrite]:
        """The states changed since last handed out (of ``customers`` only, when given),
        serialized now. Each stays dirty until :meth:`written` is called for it; one handed out
        again is one that changed since.

        This is also where a customer whose state events changed gets its first look at its
        churn risk scheduled (``Engine.risk_first_look_s`` as of ``now_s``, default the wall
        clock; at most one risk evaluation): once per customer per checkpoint, not per event.
        The schedule is stored with the state, so a rebuilt deadline index needs no search."""
        handed = self._handed
        writes = []
        if now_s is None:
            now_s = time.time()
        dirty = self._dirty
        cached = self._states
        entries: Iterable[tuple[str, tuple[CustomerState | bytes | None, int, int]]] = (
            dirty.items() if customers is None
            else [(c, dirty[c]) for c in customers if c in dirty])
        for customer_id, (state, partition, change) in entries:
            done = handed.get(customer_id)
            if done is None or done.change != change:
                value: bytes | None
                if state is None or isinstance(state, bytes):
                    value = state
                else:
                    value = self._encoded(customer_id, state, partition, change, now_s)
                    if customer_id not in cached:  # kept encoded until written
                        dirty[customer_id] = (value, partition, change)
                write = PendingWrite(customer_id, value, partition, change)
                handed[customer_id] = write
                writes.append(write)
        return writes

    def written(self, write: PendingWrite) -> None:
        deleted = self._deleted.get(write.customer_id)
        if deleted is not None and write.change >= deleted:
            del self._deleted[write.customer_id]
        pending = self._dirty.get(write.customer_id)
        if pending is not None and pending[2] == write.change:
            del self._dirty[write.customer_id]
            del self._handed[write.customer_id]
            self._applied.pop(write.customer_id, None)
            self._base.pop(write.customer_id, None)

    def outputs(self, outcome: Outcome, customer_id: str, *,
                kafka_ts_s: float | None) -> list[Output]:
        """The records an outcome publishes (alerts, control alerts to the control topic, then
        its score update); counts its policy
        events. The records' own metrics are counted when the broker has them."""
        key = customer_id.encode()
        for policy in outcome.policy_events:
            metrics.child(metrics.alerts_policy, policy.rule, policy.kind.value,
                          policy.reason, policy.action).inc()
        records = []
        topics = self.topics
        for alert in outcome.alerts:
            marketing = alert.kind is AlertKind.marketing
            records.append(Output(
                topics.alerts_marketing if marketing else topics.alerts_support,
                key, alert.to_json(),
                on_sent=_alert_sent(alert.rule, alert.kind.value, kafka_ts_s),
            ))
        for alert in outcome.control_alerts:
            records.append(Output(
                topics.alerts_control, key, alert.to_json(),
                on_sent=metrics.child(metrics.alerts_withheld, alert.rule, alert.kind.value).inc,
            ))
        if outcome.score_update is not None:
            records.append(Output(topics.scores, key, outcome.score_update.to_json(),
                                  on_sent=metrics.scores_published.inc))
        return records


def _alert_sent(rule: str, kind: str, kafka_ts_s: float | None) -> Callable[[], None]:
    def count() -> None:
        metrics.child(metrics.alerts_emitted, rule, kind).inc()
        if kafka_ts_s is not None:
            metrics.event_to_alert.observe(max(0.0, time.time() - kafka_ts_s))
    return count
