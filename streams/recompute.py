"""Offline recomputation: the same events through the same engine, in memory, no Kafka.

The fault tests (tests/faults/test_kill9.py, test_rebalance.py) compare what a worker left
behind after crashes and rebalances with what one uninterrupted pass over the same events
yields. :func:`recompute` validates every message as the pipeline does, resolves its customer
(identity links learned in the order given), and applies it with :class:`~streams.core.engine.
Engine`, one state per customer, with nothing stored in between.

What is a pure function of the events, and so must match exactly (floats bit for bit):
every field of :class:`~streams.core.state.CustomerState` except ``lag_s``; every alert (id
and payload) except ``emitted_at``; every score update except ``updated_at``.

What is excluded, and why:

* ``lag_s``, ``emitted_at``, ``updated_at``: wall-clock times of processing by definition;
  ``risk_wake_s``: a schedule the worker computes at checkpoints from the wall clock.
* Deadline work done by the worker's timer (``Engine.tick``): cart recoveries and alerts
  deferred by quiet hours are released when wall time, not an event, passes their deadline
  (``now - lag_s``), so *whether* a tick fired before the customer's next event depends on
  how fast the worker ran. :func:`recompute` runs no ticks. A comparison is exact only for
  rules without deadlines: the fault tests run the worker with :func:`no_deadline_rules`
  (the shipped rules without ``cart_recovery`` and quiet hours); the deadline paths have their
  own unit and end-to-end tests. The same holds for idle customers' churn risk, re-evaluated
  by the timer as of the wall clock (docs/scoring.md, "Time-aware risk"): the fault tests
  turn it off (``CX_IDLE_RISK=false``), and with it off a worker's states, alerts and score
  updates are again a pure function of the events.
* Events known by an anonymous id only: the customer such an event counts for depends on
  whether the worker had already seen the linking event on *another* partition (partitions are
  processed independently, their relative order is not defined), so :func:`recompute`'s
  answer (links learned in the order given) is one of several correct ones.
* Per customer, the worker applies events in the order of their partition (a customer's events
  share one partition), which is the order given here when the caller passes each partition's
  records in offset order; the interleaving of partitions does not matter for any customer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from streams.config import WorkerConfig
from streams.core.engine import Engine
from streams.core.identity import resolve
from streams.core.rule_config import DEFAULT_RULES_PATH
from streams.core.state import CustomerState
from streams.core.validation import Invalid, validate_event

# CustomerState fields that hold wall-clock quantities (excluded from comparisons).
WALL_CLOCK_FIELDS = frozenset({"lag_s", "risk_wake_s"})
DEADLINE_RULES = frozenset({"cart_recovery"})


@dataclass
class Recomputed:
    """The outcome of one uninterrupted pass: final states, alerts and latest score updates."""

    states: dict[str, CustomerState] = field(default_factory=dict)
    # alert id -> the alert's JSON as a dict, without emitted_at: sent and control alerts
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the ids of the control alerts (withheld by their rule's control_share) among them
    control_ids: set[str] = field(default_factory=set)
    # customer id -> the latest score update as a dict, without updated_at
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    # customer id -> how many score updates were published for it
    score_counts: dict[str, int] = field(default_factory=dict)
    valid_event_ids: set[str] = field(default_factory=set)
    invalid: int = 0
    duplicates: int = 0
    late_dropped: int = 0


def recompute(engine: Engine, values: Iterable[bytes | None], config: WorkerConfig, *,
              now: datetime) -> Recomputed:
    """Apply ``values`` (message values, each partition's in offset order) to fresh states.

    ``now`` stands for the receive time (validation's future-skew check, ``lag_s``,
    ``emitted_at``): pass one time for the whole pass. Alert ids are deterministic, so an alert
    emitted twice is one entry.
    """
    out = Recomputed()
    links: dict[str, str] = {}
    states = out.states
    for value in values:
        event: Any = validate_event(value, now=now, max_bytes=config.max_event_bytes,
                                    max_future_skew_s=config.max_future_skew_s)
        if isinstance(event, Invalid):
            out.invalid += 1
            continue
        out.valid_event_ids.add(event.event_id)
        customer, link = resolve(event, links.get)
        if link is not None:
            links[link[0]] = link[1]
        outcome = engine.process(states.get(customer), customer, event, now=now)
        states[customer] = outcome.state
        if outcome.duplicate:
            out.duplicates += 1
            continue
        if outcome.late_dropped:
            out.late_dropped += 1
        for alert in outcome.alerts:
            out.alerts[alert.alert_id] = alert_payload(alert.to_json())
        for alert in outcome.control_alerts:
            out.alerts[alert.alert_id] = alert_payload(alert.to_json())
            out.control_ids.add(alert.alert_id)
        if outcome.score_update is not None:
            out.scores[customer] = score_payload(outcome.score_update.to_json())
            out.score_counts[customer] = out.score_counts.get(customer, 0) + 1
    return out


def comparable(state: CustomerState) -> dict[str, Any]:
    """The fields of ``state`` that are a pure function of the customer's events."""
    return {name: value for name, value in state.as_dict().items()
            if name not in WALL_CLOCK_FIELDS}


def state_differences(live: CustomerState, expected: CustomerState) -> list[str]:
    """Names of the comparable fields that differ (empty: the states agree)."""
    a, b = comparable(live), comparable(expected)
    return [name for name in a if a[name] != b[name]]


def alert_payload(value: bytes) -> dict[str, Any]:
    """A published alert without its wall-clock field (``emitted_at``)."""
    payload: dict[str, Any] = orjson.loads(value)
    payload.pop("emitted_at", None)
    return payload


def score_payload(value: bytes) -> dict[str, Any]:
    """A published score update without its wall-clock field (``updated_at``)."""
    payload: dict[str, Any] = orjson.loads(value)
    payload.pop("updated_at", None)
    return payload


def no_deadline_rules(path: Path) -> Path:
    """Write the shipped rules without deadline work (cart recovery off, no quiet hours) to
    ``path``: with them the worker's timer has nothing to do, and a recomputation is exact."""
    raw = json.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    raw["rules"] = [rule for rule in raw["rules"] if rule["id"] not in DEADLINE_RULES]
    raw["policy"]["quiet_hours"] = None
    path.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return path
