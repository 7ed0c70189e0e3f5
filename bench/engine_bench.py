"""Throughput of ``Engine.process`` alone (no Kafka, no JSON decoding) on synthetic events.

Run: ``.venv/bin/python bench/engine_bench.py [n_events] [n_customers]``. The events are built
(validated pydantic models) before the clock starts; states are kept as objects between events
and encoded with ``to_bytes`` once per event, as the Faust table does.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.events import EventBase, touchpoint_adapter
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState

_MIX: list[tuple[float, str, dict[str, Any]]] = [
    (0.55, "page_view", {"url": "/p", "product_id": "sku-1", "load_time_ms": 420}),
    (0.08, "page_view", {"url": "/x", "http_status": 503}),
    (0.08, "checkout_started", {"cart_id": "k", "cart_value": 40.0, "currency": "EUR"}),
    (0.06, "cart_abandon", {"cart_id": "k", "cart_value": 40.0, "currency": "EUR"}),
    (0.07, "purchase", {"order_id": "o", "order_value": 40.0, "currency": "EUR"}),
    (0.04, "app_error", {"error_code": "E1"}),
    (0.02, "payment_failed", {}),
    (0.05, "support_contact", {"contact_id": "t", "reason": "billing", "resolved": False}),
    (0.03, "survey_answer", {"survey": "nps", "score": 4, "comment": "Slow delivery, sad."}),
    (0.02, "survey_answer", {"survey": "csat", "score": 5}),
]


def synthetic_events(n_events: int, n_customers: int, seed: int = 7) -> list[EventBase]:
    """``n_events`` validated events over ``n_customers``, in event-time order."""
    rng = random.Random(seed)
    weights = [w for w, _t, _p in _MIX]
    t0 = datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc)
    out = []
    for i in range(n_events):
        _w, typ, props = rng.choices(_MIX, weights)[0]
        doc = {
            "event_id": f"ev-{i}",
            "schema_version": 1,
            "occurred_at": (t0 + timedelta(seconds=i * 0.5)).isoformat(),
            "customer_id": f"cust-{rng.randrange(n_customers)}",
            "channel": "web",
            "timezone": "Europe/Berlin",
            "event_type": typ,
            "properties": props,
        }
        out.append(touchpoint_adapter.validate_python(doc))
    return out


def bench_engine(n_events: int = 50_000, n_customers: int = 2_000) -> dict[str, float]:
    """Events per second of Engine.process (+ to_bytes per event) on synthetic traffic."""
    engine = Engine(EngineConfig(), load_rules(None), VaderAnalyzer())
    events = synthetic_events(n_events, n_customers)
    states: dict[str, CustomerState] = {}
    now = datetime.now(timezone.utc)
    alerts = updates = state_bytes = 0
    start = time.perf_counter()
    for e in events:
        cid = e.customer_id or ""
        out = engine.process(states.get(cid), cid, e, now=now)
        states[cid] = out.state
        state_bytes += len(out.state.to_bytes())
        alerts += len(out.alerts)
        updates += out.score_update is not None
    elapsed = time.perf_counter() - start
    return {
        "events": float(n_events),
        "customers": float(n_customers),
        "seconds": round(elapsed, 3),
        "events_per_s": round(n_events / elapsed, 1),
        "alerts": float(alerts),
        "score_updates": float(updates),
        "mean_state_bytes": round(state_bytes / n_events, 1),
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    for key, value in bench_engine(n, c).items():
        print(f"{key}: {value:g}")
