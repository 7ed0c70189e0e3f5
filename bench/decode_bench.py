"""Micro-benchmark: decode + validate of typical touchpoint events through ``validate_event``.

Goal (issue 3): at most 5 microseconds per typical event on one core. The mix below follows the
traffic shape of a shop: mostly page views, then surveys, support contacts and the purchase
funnel. The figure is the best of ``repeat`` passes in process CPU time (the usual micro-benchmark
practice: the fastest pass is the one least disturbed by other processes), and the bare pydantic
``validate_json`` figure is reported next to it so the validator's own overhead is visible.

Run: ``python bench/decode_bench.py [-n 200000] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.events import touchpoint_adapter
from streams.core.validation import Invalid, validate_event

# Share of each event type in the mix (sums to 1).
MIX: dict[str, float] = {
    "page_view": 0.55,
    "survey_answer": 0.10,
    "support_contact": 0.06,
    "identify": 0.06,
    "checkout_started": 0.06,
    "cart_abandon": 0.05,
    "purchase": 0.05,
    "app_error": 0.04,
    "payment_failed": 0.03,
}
DISTINCT_EVENTS = 2_000
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _properties(event_type: str, rng: random.Random) -> dict[str, Any]:
    cart = f"cart-{rng.randrange(100_000)}"
    if event_type == "page_view":
        props: dict[str, Any] = {
            "url": f"https://shop.example.com/p/{rng.randrange(5000)}?ref=home",
            "load_time_ms": rng.randrange(80, 4000),
            "http_status": rng.choice([200, 200, 200, 200, 404, 500]),
        }
        if rng.random() < 0.6:
            props["product_id"] = f"sku-{rng.randrange(5000)}"
        return props
    if event_type == "survey_answer":
        survey = rng.choice(["nps", "csat", "ces"])
        low, high = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[survey]
        return {
            "survey": survey,
            "score": rng.randint(low, high),
            "comment": rng.choice(["", "Delivery was late again.", "Great help, thanks!"]),
        }
    if event_type == "support_contact":
        return {
            "contact_id": f"t-{rng.randrange(10**6)}",
            "reason": rng.choice(["delivery", "refund", "payment", "account"]),
            "resolved": rng.random() < 0.7,
            "wait_s": round(rng.uniform(0, 900), 1),
        }
    if event_type == "identify":
        return {"method": "login"}
    if event_type == "checkout_started":
        return {"cart_id": cart, "cart_value": round(rng.uniform(5, 400), 2), "currency": "EUR"}
    if event_type == "cart_abandon":
        return {
            "cart_id": cart,
            "cart_value": round(rng.uniform(5, 400), 2),
            "currency": "EUR",
            "items": rng.randrange(1, 8),
        }
    if event_type == "purchase":
        return {
            "order_id": f"o-{rng.randrange(10**6)}",
            "order_value": round(rng.uniform(5, 400), 2),
            "currency": "EUR",
            "cart_id": cart,
        }
    if event_type == "app_error":
        return {"error_code": "E_TIMEOUT", "screen": "checkout", "message": "gateway timeout"}
    if event_type == "payment_failed":
        return {"cart_id": cart, "order_value": 59.9, "currency": "EUR", "reason": "declined"}
    raise ValueError(f"no generator for {event_type}")


def typical_events(count: int = DISTINCT_EVENTS, *, seed: int = 7) -> list[bytes]:
    """``count`` distinct, valid wire-format events in the benchmark mix (deterministic)."""
    rng = random.Random(seed)
    types, weights = zip(*MIX.items(), strict=True)
    events: list[bytes] = []
    for _ in range(count):
        event_type = rng.choices(types, weights)[0]
        known = rng.random() < 0.8
        occurred_at = NOW - timedelta(seconds=rng.uniform(0, 600))
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": occurred_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "customer_id": f"c-{rng.randrange(50_000)}" if known else None,
            "anonymous_id": None if known else f"a-{rng.getrandbits(48):012x}",
            "session_id": f"s-{rng.randrange(10**6)}",
            "channel": rng.choice(["web", "web", "app", "email", "call_center"]),
            "touchpoint": rng.choice(["home", "product_page", "checkout", "support"]),
            "properties": _properties(event_type, rng),
        }
        events.append(json.dumps(event, separators=(",", ":")).encode())
    return events


def _us_validate_event(events: list[bytes], passes: int) -> float:
    # Called exactly as the ingest agent calls it; CPU time of this process, not wall time, so
    # that time spent descheduled on a shared machine does not count. Single-threaded: one core.
    start = time.process_time_ns()
    for _ in range(passes):
        for value in events:
            validate_event(value, now=NOW, max_bytes=1 << 20, max_future_skew_s=86400.0)
    return (time.process_time_ns() - start) / (passes * len(events)) / 1000


def _us_validate_json(events: list[bytes], passes: int) -> float:
    validate_json = touchpoint_adapter.validate_json
    start = time.process_time_ns()
    for _ in range(passes):
        for value in events:
            validate_json(value)
    return (time.process_time_ns() - start) / (passes * len(events)) / 1000


def bench_decode(n: int = 200_000, *, repeat: int = 5) -> dict[str, float]:
    """Microseconds per event through ``validate_event`` (best of ``repeat`` passes of ``n``).

    Raises ``RuntimeError`` if an event of the mix is rejected: the figure is only meaningful
    for the happy path.
    """
    events = typical_events()
    rejected = [r for r in (validate_event(v, now=NOW) for v in events) if isinstance(r, Invalid)]
    if rejected:
        raise RuntimeError(f"benchmark mix holds invalid events: {rejected[:3]}")

    passes = max(1, n // len(events))
    # Interleaved, so both figures see the same machine conditions.
    full, bare = float("inf"), float("inf")
    for _ in range(repeat):
        full = min(full, _us_validate_event(events, passes))
        bare = min(bare, _us_validate_json(events, passes))
    return {
        "n": float(n),
        "us_per_event": round(full, 3),
        "us_per_event_validate_json_only": round(bare, 3),
        "events_per_s": round(1e6 / full),
        "mean_event_bytes": round(sum(map(len, events)) / len(events), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=200_000, help="events per pass (default 200000)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    result = bench_decode(args.n)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(
            f"decode+validate: {result['us_per_event']:.2f} us/event "
            f"({result['events_per_s']:,.0f} events/s; bare validate_json "
            f"{result['us_per_event_validate_json_only']:.2f} us; "
            f"mean event {result['mean_event_bytes']:.0f} bytes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
