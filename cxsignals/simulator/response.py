"""Simulated customers react to the alerts they actually receive (issue 16: closing the loop).

:class:`ResponseModel` decides, for one alert read from the marketing alert topic, whether its
customer reacts and when: with the rule's *reaction probability* ``R`` the customer buys within
the rule's outcome window (a purchase event at the alert's event time + a delay). A customer
who would buy anyway (probability ``p0``) still buys, so the true absolute uplift of sending is
``R * (1 - p0)`` and a control alert (never on the alert topic) gets no reaction at all. The
decision is a stable hash of the seed and the alert id: a re-run reacts the same way.

:func:`cart_experiment` generates a controlled cohort for tests and demos: each customer
abandons one cart (the cart_recovery rule fires 30 min later) and buys anyway with probability
``baseline`` a few hours after the alert (a page view 45 min after the abandon moves its
event-time clock past the deadline, so backfilled alerts fire without waiting for wall time).
:class:`Responder` is the loop: it consumes the marketing alert topic and publishes the
reactions of the customers it simulates.

Delivery: the responder publishes with acks=all and flushes each poll; its consumer has no
group (it reads from the start), so a restarted responder reacts again with the same event ids
(deterministic), which the sink deduplicates. Failure behaviour: an alert that does not decode
is skipped and counted.
"""

from __future__ import annotations

import hashlib
import heapq
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from cxsignals.simulator.journeys import SimMessage

HOUR_S = 3600.0


def _unit(*parts: str) -> float:
    """A stable uniform number in [0, 1) from text (SHA-256, not ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def _uuid(*parts: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256("\x1f".join(parts).encode()).digest()[:16],
                         version=4))


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(event_id: str, event_type: str, customer_id: str, at: datetime, segment: str,
           touchpoint: str, properties: dict[str, Any]) -> SimMessage:
    event: dict[str, Any] = {
        "event_id": event_id, "event_type": event_type, "schema_version": 1,
        "occurred_at": _iso(at), "customer_id": customer_id, "channel": "web",
        "touchpoint": touchpoint, "journey_stage": "purchase", "segment": segment,
        "timezone": "UTC", "properties": properties,
    }
    if not segment:
        del event["segment"]
    value = orjson.dumps(event)
    return SimMessage(customer_id.encode(), value, at, False, None)


@dataclass(frozen=True)
class ResponseModel:
    """Reaction probability per rule (``{"cart_recovery": 0.25}``) and the reaction delay.

    ``delay_s``: (min, max) seconds after the alert's event time; the purchase must fall inside
    the rule's outcome window (24 h for cart_recovery). ``customer_prefix``: only customers
    whose id starts with it react (the ones this simulator runs).
    """

    reaction: dict[str, float]
    seed: int = 42
    delay_s: tuple[float, float] = (HOUR_S, 20 * HOUR_S)
    customer_prefix: str = ""

    def react(self, alert: dict[str, Any]) -> SimMessage | None:
        """The purchase the alert's customer makes because of it, or None."""
        share = self.reaction.get(str(alert.get("rule")), 0.0)
        customer_id = str(alert.get("customer_id", ""))
        alert_id = str(alert.get("alert_id", ""))
        if share <= 0 or not customer_id.startswith(self.customer_prefix):
            return None
        if _unit(str(self.seed), "react", alert_id) >= share:
            return None
        low, high = self.delay_s
        delay = low + (high - low) * _unit(str(self.seed), "delay", alert_id)
        sent = datetime.fromisoformat(str(alert["event_time"]).replace("Z", "+00:00"))
        context = alert.get("context") or {}
        return _event(
            _uuid(str(self.seed), "reaction", alert_id), "purchase", customer_id,
            sent + timedelta(seconds=delay), "", "checkout",
            {"order_id": "o-" + _uuid(str(self.seed), "order", alert_id)[:12],
             "order_value": float(context.get("cart_value", 50.0)),
             "currency": str(context.get("currency", "EUR")),
             **({"cart_id": context["cart_id"]} if context.get("cart_id") else {})},
        )


def cart_experiment(customers: int, start: datetime, *, baseline: float, seed: int = 42,
                    prefix: str = "x-", segment: str = "experiment",
                    spread_s: float = HOUR_S) -> Iterator[SimMessage]:
    """One abandoned cart (50 EUR, time zone UTC) per customer, spread over ``spread_s`` from
    ``start``; with probability ``baseline`` the customer buys anyway 1-20 h after the
    cart_recovery alert (30 min after the abandon). Event time never decreases. Start in
    daytime UTC and at least 2 days back, so that alerts pass quiet hours and outcome windows
    have closed."""
    events: list[SimMessage] = []
    for i in range(customers):
        customer_id = f"{prefix}{i}"
        abandon_at = start + timedelta(seconds=spread_s * i / max(1, customers))
        cart_id = "cart-" + _uuid(str(seed), "cart", customer_id)[:12]
        events.append(_event(
            _uuid(str(seed), "abandon", customer_id), "cart_abandon", customer_id, abandon_at,
            segment, "checkout",
            {"cart_id": cart_id, "cart_value": 50.0, "currency": "EUR", "items": 2}))
        # A visit 45 min later moves the customer's event-time clock past the 30 min deadline,
        # so the alert fires in event time (the worker's timer follows a backfill's lag).
        events.append(_event(
            _uuid(str(seed), "visit", customer_id), "page_view", customer_id,
            abandon_at + timedelta(minutes=45), segment, "home",
            {"url": "https://shop.example.com/", "load_time_ms": 300, "http_status": 200}))
        if _unit(str(seed), "baseline", customer_id) < baseline:
            delay = HOUR_S * (1.5 + 19 * _unit(str(seed), "baseline-delay", customer_id))
            events.append(_event(
                _uuid(str(seed), "organic", customer_id), "purchase", customer_id,
                abandon_at + timedelta(seconds=delay), segment, "checkout",
                {"order_id": "o-" + _uuid(str(seed), "organic-order", customer_id)[:12],
                 "order_value": 50.0, "currency": "EUR", "cart_id": cart_id}))
    events.sort(key=lambda m: m.event_time)
    return iter(events)


@dataclass
class Responder:
    """Consumes ``alert_topic`` from the start and publishes the model's reactions to
    ``touchpoint_topic``. ``make_consumer``/``make_producer`` build kafka-python clients."""

    model: ResponseModel
    alert_topic: str
    touchpoint_topic: str
    make_consumer: Callable[[str], Any]
    producer: Any
    alerts_seen: int = 0
    reactions: int = 0
    undecodable: int = 0
    _consumer: Any = field(default=None, repr=False)
    # Reactions whose event time is still ahead of the wall clock: published when it comes.
    _pending: list[tuple[datetime, int, SimMessage]] = field(default_factory=list, repr=False)

    def poll(self, timeout_ms: int = 500) -> int:
        """Read what arrived, publish the reactions, wait until the broker has them; return
        the number of alerts read."""
        if self._consumer is None:
            self._consumer = self.make_consumer(self.alert_topic)
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        read = 0
        for records in batches.values():
            for record in records:
                read += 1
                try:
                    alert = orjson.loads(record.value)
                    reaction = self.model.react(alert)
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
                    self.undecodable += 1
                    continue
                if reaction is not None:
                    heapq.heappush(self._pending,
                                   (reaction.event_time, self.alerts_seen + read, reaction))
        now = datetime.now(timezone.utc)
        futures = []
        while self._pending and self._pending[0][0] <= now:
            reaction = heapq.heappop(self._pending)[2]
            futures.append(self.producer.send(self.touchpoint_topic, key=reaction.key,
                                              value=reaction.value))
        if futures:
            self.producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)
            self.reactions += len(futures)
        self.alerts_seen += read
        return read

    @property
    def pending(self) -> int:
        return len(self._pending)

    def run_until_idle(self, idle_s: float, max_s: float,
                       stop: Callable[[], bool] = lambda: False) -> None:
        """Poll until no alert arrived for ``idle_s`` (after the first one) and no reaction is
        pending, or ``max_s`` passed, or ``stop()``."""
        deadline = time.monotonic() + max_s
        last = None
        while time.monotonic() < deadline and not stop():
            if self.poll():
                last = time.monotonic()
            elif (last is not None and not self._pending
                  and time.monotonic() - last >= idle_s):
                return

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
