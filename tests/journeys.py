"""Scripted customer journeys shared by the engine unit tests and the broker integration test.

Each builder returns a :class:`Journey`: the events (typed models, in publish order, event ids
unique per customer id) and exactly the alerts they must produce under the shipped default rules.
The integration test publishes ``journey.payloads()`` to ``cx.touchpoints`` (key = customer id)
and expects exactly ``journey.expected_rules`` on the alert topics, with the alert ids that
``journey.expected_alert_ids()`` computes, and nothing else. Use a fresh customer id per run.

Times are relative to ``base`` (default: a Monday 12:00 UTC, outside the default quiet hours).
Deadlines (cart_recovery) are passed by a later event of the same customer, so the journeys do
not depend on the worker's wall-clock timer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.events import EventBase, touchpoint_adapter

JOURNEY_BASE = datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc)


def make_event(
    customer_id: str,
    event_id: str,
    event_type: str,
    at: datetime,
    properties: dict[str, Any] | None = None,
    **envelope: Any,
) -> EventBase:
    """A validated touchpoint event (channel defaults to web)."""
    doc: dict[str, Any] = {
        "event_id": event_id,
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "customer_id": customer_id,
        "channel": "web",
        "event_type": event_type,
        "properties": properties or {},
    }
    doc.update(envelope)
    event: EventBase = touchpoint_adapter.validate_python(doc)
    return event


@dataclass
class Journey:
    name: str
    customer_id: str
    events: list[EventBase]
    expected_rules: list[str]  # alerts, in emission order
    expected_suppressed: list[tuple[str, str]] = field(default_factory=list)  # (rule, reason)
    evidence: dict[str, list[str]] = field(default_factory=dict)  # rule -> evidence event ids

    def payloads(self) -> list[bytes]:
        """The events as the JSON bytes a producer publishes."""
        return [
            json.dumps(e.model_dump(mode="json", exclude_none=True)).encode() for e in self.events
        ]

    def expected_alert_ids(self) -> dict[str, str]:
        """rule -> the deterministic alert id the worker must emit."""
        from streams.core.engine import alert_id

        return {
            rule: alert_id(rule, self.customer_id, self.evidence[rule])
            for rule in self.expected_rules
        }


class _Script:
    def __init__(self, customer_id: str, base: datetime) -> None:
        self.customer_id = customer_id
        self.base = base
        self.events: list[EventBase] = []

    def add(
        self, event_type: str, minutes: float, properties: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        event_id = f"{self.customer_id}:{len(self.events) + 1}"
        at = self.base + timedelta(minutes=minutes)
        self.events.append(make_event(self.customer_id, event_id, event_type, at, properties, **kw))
        return event_id


def cart_abandoned(customer_id: str, base: datetime = JOURNEY_BASE) -> Journey:
    """(1) A cart abandoned at checkout and not bought: cart_recovery when the 30 min pass."""
    s = _Script(customer_id, base)
    s.add("page_view", 0, {"url": "/p/sku-1", "product_id": "sku-1"})
    s.add(
        "checkout_started",
        2,
        {"cart_id": "cart-1", "cart_value": 89.9, "currency": "EUR"},
        touchpoint="checkout",
    )
    abandon = s.add(
        "cart_abandon",
        5,
        {"cart_id": "cart-1", "cart_value": 89.9, "currency": "EUR", "items": 2},
        touchpoint="checkout",
    )
    s.add("page_view", 45, {"url": "/"})  # its event time passes the deadline (5 + 30 min)
    return Journey(
        "cart_abandoned",
        customer_id,
        s.events,
        ["cart_recovery"],
        evidence={"cart_recovery": [abandon]},
    )


def cart_then_bought(customer_id: str, base: datetime = JOURNEY_BASE) -> Journey:
    """(2) A cart abandoned, then bought within 30 min: no alert."""
    s = _Script(customer_id, base)
    s.add("page_view", 0, {"url": "/p/sku-2", "product_id": "sku-2"})
    s.add(
        "cart_abandon",
        5,
        {"cart_id": "cart-2", "cart_value": 120.0, "currency": "EUR"},
        touchpoint="checkout",
    )
    s.add(
        "purchase",
        20,
        {"order_id": "o-2", "order_value": 120.0, "currency": "EUR", "cart_id": "cart-2"},
        touchpoint="checkout",
    )
    s.add("page_view", 60, {"url": "/account/orders"})
    return Journey("cart_then_bought", customer_id, s.events, [])


def detractor(customer_id: str, base: datetime = JOURNEY_BASE) -> Journey:
    """(3) An NPS detractor answer: detractor_follow_up."""
    s = _Script(customer_id, base)
    s.add("page_view", 0, {"url": "/survey"})
    answer = s.add("survey_answer", 3, {"survey": "nps", "score": 3}, touchpoint="delivery")
    return Journey(
        "detractor",
        customer_id,
        s.events,
        ["detractor_follow_up"],
        evidence={"detractor_follow_up": [answer]},
    )


def repeated_unresolved_contacts(customer_id: str, base: datetime = JOURNEY_BASE) -> Journey:
    """(4) Two unresolved support contacts within 24 h: repeat_contact."""
    s = _Script(customer_id, base)
    first = s.add(
        "support_contact",
        0,
        {"contact_id": "t-1", "reason": "delivery", "resolved": False},
        channel="call_center",
    )
    second = s.add(
        "support_contact",
        180,
        {"contact_id": "t-2", "reason": "delivery", "resolved": False},
        channel="chat",
    )
    return Journey(
        "repeated_unresolved_contacts",
        customer_id,
        s.events,
        ["repeat_contact"],
        evidence={"repeat_contact": [first, second]},
    )


def promoter_after_purchase(customer_id: str, base: datetime = JOURNEY_BASE) -> Journey:
    """(5) A purchase, then an NPS 10 two days later: promoter_referral."""
    s = _Script(customer_id, base)
    bought = s.add(
        "purchase",
        0,
        {"order_id": "o-5", "order_value": 60.0, "currency": "EUR"},
        touchpoint="checkout",
    )
    answer = s.add("survey_answer", 2 * 24 * 60, {"survey": "nps", "score": 10}, channel="email")
    return Journey(
        "promoter_after_purchase",
        customer_id,
        s.events,
        ["promoter_referral"],
        evidence={"promoter_referral": [bought, answer]},
    )


def detractor_then_cart(customer_id: str, base: datetime = JOURNEY_BASE) -> Journey:
    """(6) A detractor who then abandons a cart: detractor_follow_up, cart_recovery suppressed."""
    s = _Script(customer_id, base)
    answer = s.add("survey_answer", 0, {"survey": "nps", "score": 2}, channel="email")
    s.add("page_view", 5, {"url": "/p/sku-6", "product_id": "sku-6"})
    s.add(
        "cart_abandon",
        10,
        {"cart_id": "cart-6", "cart_value": 60.0, "currency": "EUR"},
        touchpoint="checkout",
    )
    s.add("page_view", 50, {"url": "/"})
    return Journey(
        "detractor_then_cart",
        customer_id,
        s.events,
        ["detractor_follow_up"],
        expected_suppressed=[("cart_recovery", "suppression")],
        evidence={"detractor_follow_up": [answer]},
    )


ALL_JOURNEYS: tuple[Callable[..., Journey], ...] = (
    cart_abandoned,
    cart_then_bought,
    detractor,
    repeated_unresolved_contacts,
    promoter_after_purchase,
    detractor_then_cart,
)


def build_engine(rules: Any = None, **config: Any) -> Any:
    """An Engine with the shipped rules (or ``rules``) and one shared VADER analyzer."""
    from streams.core.engine import Engine, EngineConfig
    from streams.core.rules import load_rules

    return Engine(EngineConfig(**config), rules or load_rules(None), _vader())


_VADER: list[Any] = []


def _vader() -> Any:
    from streams.core.sentiment import VaderAnalyzer

    if not _VADER:
        _VADER.append(VaderAnalyzer())
    return _VADER[0]
