"""Issue 15 item 2 end to end: customers whose purchases are back-dated (the last one 160 days
ago) and who send nothing more. The worker scores their purchases at event time; with no new
event its timer then re-evaluates their churn risk as of now, through the deadline index: the
published risk rises, win_back fires for the quiet buyer and high_value_at_risk for the quiet
big spender (its expected 12-month value stays above the rule's min_clv_12m; its win_back the open
support alert suppresses)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from streams.core.alert_ids import in_control_group
from streams.core.rules import load_rules
from tests.integration.conftest import Stack, WorkerProcess, consume_all, publish

PURCHASE_DAYS_AGO = (200, 180, 160)


def _midday_zone(now: datetime) -> str:
    """An IANA zone where it is about noon now: outside the shipped quiet hours (21-08)."""
    offset = 12 - now.hour
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _purchases(customer: str, now: datetime, value: float, zone: str) -> list[bytes]:
    return [orjson.dumps({
        "event_id": f"{customer}-p{i}", "schema_version": 1,
        "occurred_at": (now - timedelta(days=ago)).isoformat(), "customer_id": customer,
        "channel": "web", "timezone": zone, "event_type": "purchase",
        "properties": {"order_id": f"o{i}", "order_value": value, "currency": "EUR"},
    }) for i, ago in enumerate(PURCHASE_DAYS_AGO)]


def _by_customer(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record.key.decode(), []).append(orjson.loads(record.value))
    return out


def test_a_quiet_customers_published_risk_rises_and_win_back_fires_with_no_new_event(
    stack: Stack, start_worker: Callable[..., WorkerProcess]
) -> None:
    now = datetime.now(timezone.utc)
    zone = _midday_zone(now)
    buyer, big = f"{stack.run_id}-quiet-buyer", f"{stack.run_id}-quiet-big-spender"
    settings = stack.settings()
    worker = start_worker()
    started = datetime.now(timezone.utc)
    publish(stack.endpoints.kafka_bootstrap, settings.topic_touchpoints,
            [(buyer.encode(), v) for v in _purchases(buyer, now, 60.0, zone)]
            + [(big.encode(), v) for v in _purchases(big, now, 500.0, zone)])
    bootstrap = stack.endpoints.kafka_bootstrap
    # win_back has a control share (issue 16): its alert is on the marketing topic, or on the
    # control topic when its id falls into the share; read both.
    sent = consume_all(bootstrap, settings.topic_alerts_marketing, expect=1, timeout_s=20)
    withheld = consume_all(bootstrap, settings.topic_alerts_control, expect=1,
                           timeout_s=0.1 if sent else 10)
    marketing = sent + withheld
    support = consume_all(bootstrap, settings.topic_alerts_support, expect=1, timeout_s=10,
                          settle_s=2)
    scores = _by_customer(consume_all(bootstrap, settings.topic_scores, expect=4,
                                      timeout_s=10, settle_s=1))

    # The published risk rose with no new event: first as of the last purchase (event time),
    # then as of now (the timer's re-evaluation).
    last_purchase = now - timedelta(days=PURCHASE_DAYS_AGO[-1])
    for customer, threshold in ((buyer, 0.6), (big, 0.5)):
        updates = scores[customer]
        at_event = [u for u in updates
                    if datetime.fromisoformat(u["event_time"]) <= last_purchase]
        idle = [u for u in updates if datetime.fromisoformat(u["event_time"]) >= started]
        assert at_event and idle, updates
        assert at_event[-1]["churn_risk"] < threshold <= idle[-1]["churn_risk"]
        assert updates[-1] == idle[-1]

    (win_back,) = _by_customer(marketing)[buyer]
    assert win_back["rule"] == "win_back"
    share = load_rules(None).control_share("win_back")
    assert bool(withheld) == in_control_group(win_back["alert_id"], share)
    assert win_back["evidence"] == [f"{buyer}-p2"]
    assert win_back["context"]["trigger"] == "inactivity"
    assert abs(win_back["context"]["days_since_last_purchase"] - 160) < 0.2
    assert win_back["context"]["risk_before"] < 0.6 <= win_back["context"]["churn_risk"]
    assert "no purchase for 160" in win_back["action"]
    assert datetime.fromisoformat(win_back["event_time"]) >= started
    assert big not in _by_customer(marketing)  # suppressed by its open support alert

    (high_value,) = _by_customer(support)[big]
    assert high_value["rule"] == "high_value_at_risk"
    assert high_value["context"]["trigger"] == "inactivity"
    assert high_value["context"]["lifetime_spend"] == 1500.0
    assert high_value["context"]["clv_12m"] >= 200  # the rule's min_clv_12m
    assert buyer not in _by_customer(support)
    assert worker.metric("cx_alerts_policy_total", 'rule="win_back"',
                         'reason="suppression"') == 1
