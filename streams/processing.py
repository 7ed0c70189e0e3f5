"""Glue between the agents and the pure engine: state load/save, metrics, and publishing.

Kept free of agent decorators so that the unit tests drive it with a plain dict as the table.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cxsignals.settings import Settings, get_settings
from schemas.alerts import AlertKind
from schemas.events import EventBase
from streams import metrics
from streams.core.engine import Engine, EngineConfig, Outcome
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState

StateTable = MutableMapping[bytes, Any]
log = logging.getLogger(__name__)


def build_engine(settings: Settings) -> Engine:
    return Engine(
        EngineConfig.from_settings(settings), load_rules(settings.rules_path), VaderAnalyzer()
    )


class Processor:
    """Runs the engine for one customer at a time, keeps the states changed since the last
    :meth:`flush`, and remembers who needs a wall-clock tick.

    States are written to the table by :meth:`flush`, once per customer per batch, not per event:
    the caller acks a batch's messages only after flushing it, so a committed offset never passes
    a state change that was not handed to the table (and its changelog).
    """

    def __init__(self, engine: Engine, *, max_cached_states: int = 50_000) -> None:
        self.engine = engine
        # customer id -> wall-clock epoch seconds of their next deadline. In memory only: after a
        # restart or rebalance it is rebuilt from the table by the first due_customers() call.
        self._wakeups: dict[str, float] = {}
        self._rescan = True
        # Decoded states of recently seen customers, so that a hot customer's state is not
        # decoded from the table on every event. Only this worker changes the states of its
        # partitions, so the cache is exact while the assignment holds; it is dropped on every
        # rebalance (see forget_states).
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self.max_cached_states = max_cached_states
        # Changed since the last flush: customer id -> (state, anchor, change number). The anchor
        # is whatever the caller needs to write that customer's state (the agents keep the Faust
        # event that fixes the partition). Never evicted: only written states leave it.
        self._dirty: dict[str, tuple[CustomerState, Any, int]] = {}
        self._changes = 0  # numbers the changes, so that a newer one is never marked written
        # The events applied to each dirty state, to rebuild it if the engine fails half-way.
        self._applied: dict[str, list[EventBase]] = {}

    def request_rescan(self) -> None:
        self._rescan = True

    def forget_states(self) -> None:
        """Drop the decoded-state cache (partitions moved: the table is the truth again).

        States not flushed yet stay: their messages are not acked, and flush() writes them."""
        self._states.clear()

    @property
    def dirty_customers(self) -> int:
        return len(self._dirty)

    def _load(self, table: StateTable, customer_id: str) -> CustomerState | None:
        pending = self._dirty.get(customer_id)
        if pending is not None:
            return pending[0]
        state = self._states.get(customer_id)
        if state is not None:
            self._states.move_to_end(customer_id)
            return state
        raw = table.get(customer_id.encode())
        return CustomerState.from_bytes(raw) if raw else None

    def _remember(self, customer_id: str, state: CustomerState) -> None:
        if self.max_cached_states <= 0:
            return
        self._states[customer_id] = state
        self._states.move_to_end(customer_id)
        if len(self._states) > self.max_cached_states:
            self._states.popitem(last=False)

    def _changed(self, customer_id: str, state: CustomerState, anchor: Any) -> None:
        self._changes += 1
        self._dirty[customer_id] = (state, anchor, self._changes)
        self._remember(customer_id, state)
        wake = state.next_wakeup_s()
        if wake is None:
            self._wakeups.pop(customer_id, None)
        else:
            self._wakeups[customer_id] = wake

    def _rebuild(self, table: StateTable, customer_id: str, now: datetime) -> None:
        """After the engine raised on a customer: their state may be half-changed. Rebuild it
        from the table and the events applied since the last flush (their outputs were already
        handed over, so the replay's outputs are dropped)."""
        self._states.pop(customer_id, None)
        pending = self._dirty.pop(customer_id, None)
        applied = self._applied.pop(customer_id, [])
        if pending is None:
            return
        raw = table.get(customer_id.encode())
        state = CustomerState.from_bytes(raw) if raw else None
        try:
            for event in applied:
                state = self.engine.process(state, customer_id, event, now=now).state
        except Exception:
            log.exception("rebuilding the state of %s failed: it stays as last flushed",
                          customer_id)
            return
        if state is not None:
            self._changed(customer_id, state, pending[1])
            self._applied[customer_id] = applied

    def process(
        self, table: StateTable, customer_id: str, event: EventBase, anchor: Any = None
    ) -> Outcome | None:
        """Apply one valid event; None when it was a redelivery (nothing changes).

        The new state is kept in memory until :meth:`flush`; ``anchor`` is handed back there."""
        now = datetime.now(timezone.utc)
        try:
            outcome = self.engine.process(
                self._load(table, customer_id), customer_id, event, now=now
            )
        except Exception:
            # The engine mutates the state in place: a half-applied state must not be reused.
            self._rebuild(table, customer_id, now)
            raise
        if outcome.duplicate:
            metrics.duplicates_skipped.inc()
            return None
        self._changed(customer_id, outcome.state, anchor)
        self._applied.setdefault(customer_id, []).append(event)
        if outcome.late_dropped:
            metrics.late_events_dropped.inc()
        metrics.child(metrics.events_processed, getattr(event, "event_type", "unknown")).inc()
        metrics.processing_lag.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        metrics.experience_score.observe(outcome.state.score)
        metrics.churn_risk.observe(outcome.state.risk)
        return outcome

    def tick(self, table: StateTable, customer_id: str, anchor: Any = None) -> Outcome | None:
        state = self._load(table, customer_id)
        if state is None:
            return None
        now = datetime.now(timezone.utc)
        try:
            outcome = self.engine.tick(state, customer_id, now=now)
        except Exception:
            self._rebuild(table, customer_id, now)
            raise
        self._changed(customer_id, outcome.state, anchor)
        return outcome

    def flush(
        self, table: StateTable, before_write: Callable[[Any], None] | None = None
    ) -> int:
        """Write every state changed since the last flush to ``table``, once each; returns how
        many. ``before_write(anchor)`` runs before each write.

        If a write raises, the states not written yet stay pending and the next flush retries
        them (a state written twice is harmless: the later write wins)."""
        writes = self.pending_writes()
        for write in writes:
            if before_write is not None:
                before_write(write.anchor)
            table[write.customer_id.encode()] = write.value
            self.written(write)
        return len(writes)

    def pending_writes(self) -> list[PendingWrite]:
        """The states changed since the last flush, serialized now; each stays pending until
        :meth:`written` is called for it (and again if it changed since)."""
        return [PendingWrite(customer_id, state.to_bytes(), anchor, change)
                for customer_id, (state, anchor, change) in self._dirty.items()]

    def written(self, write: PendingWrite) -> None:
        """``write`` is in the table: its customer is clean unless their state changed after
        :meth:`pending_writes` (then the newer state stays pending)."""
        pending = self._dirty.get(write.customer_id)
        if pending is not None and pending[2] == write.change:
            del self._dirty[write.customer_id]
            self._applied.pop(write.customer_id, None)

    def due_customers(self, table: StateTable, now_s: float) -> Iterator[str]:
        """Customers whose next deadline passed in wall time; each is returned once."""
        if self._rescan:
            self._rescan = False
            for key, raw in list(table.items()):
                if raw:
                    wake = CustomerState.from_bytes(raw).next_wakeup_s()
                    if wake is not None:
                        self._wakeups[key.decode()] = wake
        due = [customer for customer, wake in self._wakeups.items() if wake <= now_s]
        for customer in due:
            del self._wakeups[customer]
            yield customer

    def outputs(
        self, outcome: Outcome, customer_id: str, *, kafka_ts_s: float | None
    ) -> list[Output]:
        """The records an outcome publishes (alerts, then its score update); counts its policy
        events. Metrics of the records themselves are counted when they are handed over."""
        key = customer_id.encode()
        for policy in outcome.policy_events:
            metrics.alerts_policy.labels(
                policy.rule, AlertKind(policy.kind).value, policy.reason, policy.action
            ).inc()
        records = []
        for alert in outcome.alerts:
            records.append(Output(
                ALERTS_MARKETING if alert.kind is AlertKind.marketing else ALERTS_SUPPORT,
                key, alert.model_dump_json().encode(),
                on_sent=_alert_sent(alert.rule, alert.kind.value, kafka_ts_s),
            ))
        if outcome.score_update is not None:
            records.append(Output(SCORES, key, outcome.score_update.model_dump_json().encode(),
                                  on_sent=metrics.scores_published.inc))
        return records


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A customer's state to write: ``anchor`` is what the caller needs to place it (the agents
    keep the Faust event that fixes the partition); ``change`` numbers the change."""

    customer_id: str
    value: bytes
    anchor: Any
    change: int


ALERTS_MARKETING = "alerts_marketing"
ALERTS_SUPPORT = "alerts_support"
SCORES = "scores"


@dataclass(frozen=True, slots=True)
class Output:
    """One record to hand to Kafka: ``topic`` names a topic role of :mod:`streams.topics`
    (``alerts_marketing``, ``alerts_support``, ``scores``, ``dead_letters``, ``keyed``)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    on_sent: Callable[[], None] | None = None


def _alert_sent(rule: str, kind: str, kafka_ts_s: float | None) -> Callable[[], None]:
    def count() -> None:
        metrics.alerts_emitted.labels(rule, kind).inc()
        if kafka_ts_s is not None:
            metrics.event_to_alert.observe(max(0.0, time.time() - kafka_ts_s))
    return count


processor = Processor(
    build_engine(get_settings()), max_cached_states=get_settings().state_cache_customers
)
