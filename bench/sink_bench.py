"""Writer throughput into the real ClickHouse server (``make bench``; not a timed test).

Builds realistic touchpoint_events rows once (a mix of every event type, through the same
``sinks.rows.event_row`` the worker uses), then measures only ``ClickHouseWriter.write`` of
columnar batches into a fresh database, so the figure is the sink's own ceiling. Goal:
200,000 rows/s. The database is dropped afterwards.

    .venv/bin/python -m bench.sink_bench --rows 1000000 --batch-rows 50000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from clickhouse_driver import Client

from cxsignals.settings import ClickHouseParams
from schemas.events import EventBase, touchpoint_adapter
from sinks.clickhouse import ClickHouseWriter
from sinks.migrations import apply_migrations, parse_version
from sinks.rows import TOUCHPOINT_EVENTS, Row, event_row

DEFAULT_URL = "clickhouse://default:@127.0.0.1:9000/cx"
CHANNELS = ("web", "app", "store", "call_center", "chat", "email", "social")


def _event(i: int, rng: random.Random, start: datetime) -> tuple[EventBase, float | None]:
    occurred = start + timedelta(milliseconds=i * 7)
    base: dict[str, Any] = {
        "event_id": f"bench-{i}-{rng.getrandbits(32):08x}",
        "schema_version": 1,
        "occurred_at": occurred.isoformat(),
        "customer_id": f"c{rng.randrange(50_000)}",
        "channel": rng.choice(CHANNELS),
        "touchpoint": rng.choice(("home", "product", "checkout", "hotline", "chat_widget")),
        "segment": rng.choice(("new", "regular", "vip")),
    }
    kind = i % 8
    sentiment: float | None = None
    if kind == 0:
        props: dict[str, Any] = {"survey": "nps", "score": rng.randrange(11), "comment": "ok"}
        event_type, sentiment = "survey_answer", rng.uniform(-1, 1)
    elif kind == 1:
        event_type, props = "checkout_started", {"cart_id": f"k{i}", "cart_value": 42.5,
                                                 "currency": "EUR"}
    elif kind == 2:
        event_type, props = "cart_abandon", {"cart_id": f"k{i}", "cart_value": 42.5,
                                             "currency": "EUR"}
    elif kind == 3:
        event_type, props = "purchase", {"order_id": f"o{i}", "order_value": 99.0,
                                         "currency": "EUR"}
    elif kind == 4:
        event_type, props = "support_contact", {"contact_id": f"s{i}", "reason": "billing",
                                                "resolved": rng.random() < 0.7,
                                                "wait_s": rng.uniform(0, 600)}
    else:
        event_type, props = "page_view", {"url": "/p", "load_time_ms": rng.randrange(3000),
                                          "http_status": 200, "product_id": f"p{i % 500}"}
    event = touchpoint_adapter.validate_python(
        {**base, "event_type": event_type, "properties": props}
    )
    return event, sentiment


def make_rows(count: int, *, seed: int = 7) -> list[Row]:
    """``count`` touchpoint_events rows of mixed event types (deterministic for a seed)."""
    rng = random.Random(seed)
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(count):
        event, sentiment = _event(i, rng, start)
        rows.append(event_row(event, sentiment, ingested_at=now))
    return rows


def bench_sink(
    rows: list[Row], *, url: str | None = None, batch_rows: int = 50_000
) -> dict[str, Any]:
    """Write ``rows`` in batches of ``batch_rows`` into a fresh database; rows/s and timings.

    The database is created with every migration (so the rollup view runs, as in production)
    and dropped at the end.
    """
    params = ClickHouseParams.from_url(url or os.environ.get("CLICKHOUSE_URL", DEFAULT_URL))
    database = f"cx_bench_{uuid.uuid4().hex[:8]}"
    admin = Client(**params.client_options())
    admin.execute(f"CREATE DATABASE {database}")
    try:
        version = parse_version(str(admin.execute("SELECT version()")[0][0]))
        apply_migrations(admin.execute, server_version=version, database=database)
        writer = ClickHouseWriter.from_params(
            host=params.host, port=params.port, user=params.user, password=params.password,
            database=database, secure=params.secure, ca_certs=params.ca_certs,
            verify=params.verify,
        )
        batch_seconds: list[float] = []
        started = time.perf_counter()
        for offset in range(0, len(rows), batch_rows):
            stats = writer.write({TOUCHPOINT_EVENTS: rows[offset:offset + batch_rows]})
            batch_seconds.append(stats.seconds)
        elapsed = time.perf_counter() - started
        writer.close()
        stored = int(admin.execute(f"SELECT count() FROM {database}.{TOUCHPOINT_EVENTS}")[0][0])
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()
    return {
        "server_version": ".".join(map(str, version)),
        "rows": len(rows),
        "rows_stored": stored,
        "batch_rows": batch_rows,
        "batches": len(batch_seconds),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(len(rows) / elapsed) if elapsed > 0 else None,
        "batch_seconds_max": round(max(batch_seconds), 3) if batch_seconds else None,
        "goal_rows_per_s": 200_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--url", default=None, help="default: CLICKHOUSE_URL")
    args = parser.parse_args()
    rows = make_rows(args.rows)
    print(json.dumps(bench_sink(rows, url=args.url, batch_rows=args.batch_rows), indent=2))


if __name__ == "__main__":
    main()
