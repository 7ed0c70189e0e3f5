"""Glue between the agents and the pure engine: state load/save, metrics, and publishing.

Kept free of agent decorators so that the unit tests drive it with a plain dict as the table.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
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


def build_engine(settings: Settings) -> Engine:
    return Engine(
        EngineConfig.from_settings(settings), load_rules(settings.rules_path), VaderAnalyzer()
    )


class Processor:
    """Runs the engine for one customer at a time and remembers who needs a wall-clock tick."""

    def __init__(self, engine: Engine, *, max_cached_states: int = 50_000) -> None:
        self.engine = engine
        # customer id -> wall-clock epoch seconds of their next deadline. In memory only: after a
        # restart or rebalance it is rebuilt from the table by the first due_customers() call.
        self._wakeups: dict[str, float] = {}
        self._rescan = True
        # Decoded states of recently seen customers, so that a hot customer's state is not
        # decoded from the table on every event. Only this worker changes the states of its
        # partitions, so the cache is exact while the assignment holds; it is dropped on every
        # rebalance (see forget_states) and an entry is dropped if the engine raised on it.
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self.max_cached_states = max_cached_states

    def request_rescan(self) -> None:
        self._rescan = True

    def forget_states(self) -> None:
        """Drop the decoded-state cache (partitions moved: the table is the truth again)."""
        self._states.clear()

    def _load(self, table: StateTable, customer_id: str) -> CustomerState | None:
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

    def _save(self, table: StateTable, customer_id: str, outcome: Outcome) -> None:
        table[customer_id.encode()] = outcome.state.to_bytes()
        self._remember(customer_id, outcome.state)
        wake = outcome.state.next_wakeup_s()
        if wake is None:
            self._wakeups.pop(customer_id, None)
        else:
            self._wakeups[customer_id] = wake

    def process(self, table: StateTable, customer_id: str, event: EventBase) -> Outcome | None:
        """Apply one valid event; None when it was a redelivery (nothing changes)."""
        now = datetime.now(timezone.utc)
        try:
            outcome = self.engine.process(
                self._load(table, customer_id), customer_id, event, now=now
            )
            if outcome.duplicate:
                metrics.duplicates_skipped.inc()
                return None
            self._save(table, customer_id, outcome)
        except Exception:
            # The engine mutates the state in place: a half-applied (or unsaved) state must
            # not be reused; the table still holds the last saved one.
            self._states.pop(customer_id, None)
            raise
        if outcome.late_dropped:
            metrics.late_events_dropped.inc()
        metrics.events_processed.labels(getattr(event, "event_type", "unknown")).inc()
        metrics.processing_lag.observe(max(0.0, (now - event.occurred_at).total_seconds()))
        metrics.experience_score.observe(outcome.state.score)
        metrics.churn_risk.observe(outcome.state.risk)
        return outcome

    def tick(self, table: StateTable, customer_id: str) -> Outcome | None:
        state = self._load(table, customer_id)
        if state is None:
            return None
        try:
            outcome = self.engine.tick(state, customer_id, now=datetime.now(timezone.utc))
            self._save(table, customer_id, outcome)
        except Exception:
            self._states.pop(customer_id, None)
            raise
        return outcome

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

    async def publish(
        self, outcome: Outcome, customer_id: str, *, kafka_ts_s: float | None
    ) -> None:
        """Hand the outcome's alerts and score update to the producer, and count policy events."""
        from streams.topics import alerts_marketing, alerts_support, scores

        key = customer_id.encode()
        for policy in outcome.policy_events:
            metrics.alerts_policy.labels(
                policy.rule, AlertKind(policy.kind).value, policy.reason, policy.action
            ).inc()
        for alert in outcome.alerts:
            topic = alerts_marketing if alert.kind is AlertKind.marketing else alerts_support
            await topic.send(key=key, value=alert.model_dump_json().encode())
            metrics.alerts_emitted.labels(alert.rule, alert.kind.value).inc()
            if kafka_ts_s is not None:
                metrics.event_to_alert.observe(max(0.0, time.time() - kafka_ts_s))
        if outcome.score_update is not None:
            await scores.send(key=key, value=outcome.score_update.model_dump_json().encode())
            metrics.scores_published.inc()


processor = Processor(
    build_engine(get_settings()), max_cached_states=get_settings().state_cache_customers
)
