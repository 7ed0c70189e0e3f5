"""Throughput of the worker's per-event core on synthetic events (no Kafka, no JSON decoding).

Run: ``.venv/bin/python -m bench.engine_bench [n_events] [n_customers] [--profile]`` (as a
module: ``bench/profile.py`` would shadow the standard library one for ``--profile``).

The events are built (JSON bytes through ``validate_event``, as the worker gets them) before the
clock starts. Per event the loop
pays what the worker pays (streams/processing.py): ``CustomerState.from_bytes`` of the stored
state, ``Engine.process``, ``to_bytes`` of the new state; ``events_per_s`` is that rate, and
``*_us`` split it per event. The publish step (``to_json`` of each alert and score
update) is timed on its own and ``with_publish_events_per_s`` adds it. Figures are wall-clock
rates of the best of ``repeats`` runs (the development box is shared), with the CPU time of that
run alongside.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from schemas.event_records import Event
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState
from streams.core.validation import Invalid, validate_event

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


def synthetic_events(n_events: int, n_customers: int, seed: int = 7) -> list[Event]:
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
        event = validate_event(orjson.dumps(doc), now=t0 + timedelta(days=30))
        assert not isinstance(event, Invalid), event
        out.append(event)
    return out


def _run_once(engine: Engine, events: list[Event], now: datetime) -> dict[str, float]:
    table: dict[str, bytes] = {}  # customer id -> encoded state, as the Faust table holds it
    alerts = updates = state_bytes = 0
    decode_s = process_s = encode_s = publish_s = 0.0
    clock = time.perf_counter
    cpu0 = time.process_time()
    start = clock()
    for e in events:
        cid = e.customer_id or ""
        raw = table.get(cid)
        t0 = clock()
        state = CustomerState.from_bytes(raw) if raw else None
        t1 = clock()
        out = engine.process(state, cid, e, now=now)
        t2 = clock()
        data = out.state.to_bytes()
        t3 = clock()
        decode_s += t1 - t0
        process_s += t2 - t1
        encode_s += t3 - t2
        table[cid] = data
        state_bytes += len(data)
        if out.alerts or out.score_update is not None:
            for alert in out.alerts:
                alert.to_json()
            if out.score_update is not None:
                out.score_update.to_json()
            publish_s += clock() - t3
            alerts += len(out.alerts)
            updates += out.score_update is not None
    elapsed = clock() - start
    cpu = time.process_time() - cpu0
    core_s = elapsed - publish_s
    n = len(events)
    return {
        "seconds": round(core_s, 3),
        "cpu_seconds": round(cpu, 3),
        "events_per_s": round(n / core_s, 1),
        "with_publish_events_per_s": round(n / elapsed, 1),
        "from_bytes_us": round(decode_s / n * 1e6, 1),
        "process_us": round(process_s / n * 1e6, 1),
        "to_bytes_us": round(encode_s / n * 1e6, 1),
        "publish_us": round(publish_s / n * 1e6, 1),
        "alerts": float(alerts),
        "score_updates": float(updates),
        "mean_state_bytes": round(state_bytes / n, 1),
    }


def bench_engine(
    n_events: int = 50_000, n_customers: int = 2_000, repeats: int = 3
) -> dict[str, float]:
    """Events per second of from_bytes + Engine.process + to_bytes on synthetic traffic."""
    engine = Engine(EngineConfig(), load_rules(None), VaderAnalyzer())
    events = synthetic_events(n_events, n_customers)
    now = datetime(2024, 5, 7, tzinfo=timezone.utc)  # fixed: identical state bytes every run
    best: dict[str, float] | None = None
    for _ in range(max(1, repeats)):
        run = _run_once(engine, events, now)
        if best is None or run["events_per_s"] > best["events_per_s"]:
            best = run
    assert best is not None
    return {"events": float(n_events), "customers": float(n_customers), **best}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 50_000
    c = int(args[1]) if len(args) > 1 else 2_000
    if "--profile" in sys.argv:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(bench_engine, n, c, 1)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        for key, value in bench_engine(n, c).items():
            print(f"{key}: {value:g}")
