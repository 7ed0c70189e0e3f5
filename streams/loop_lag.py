"""Event-loop lag: how late a periodic wake-up runs, i.e. how long something blocked the loop.

Both processes run :func:`watch_loop_lag` for their lifetime; the histogram
``cx_event_loop_lag_seconds`` shows stalls (a long synchronous step delays every message
behind it), and :data:`max_lag` keeps the largest one seen for the benchmark.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Gauge, Histogram

INTERVAL_S = 0.05

# Defined here, not in streams.metrics: the sink process exports these too, and nothing else of
# the worker's.
event_loop_lag = Histogram(
    "cx_event_loop_lag_seconds",
    "How much later than scheduled a periodic wake-up of the event loop ran (loop stalls)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
event_loop_lag_max = Gauge(
    "cx_event_loop_lag_max_seconds", "The largest event-loop lag since the process started"
)


class _Max:
    seconds = 0.0


max_lag = _Max()


async def watch_loop_lag(interval_s: float = INTERVAL_S) -> None:
    """Sleep ``interval_s`` again and again and record how much later than asked it woke."""
    clock = time.monotonic
    observe = event_loop_lag.observe
    gauge = event_loop_lag_max
    while True:
        started = clock()
        await asyncio.sleep(interval_s)
        lag_s = max(0.0, clock() - started - interval_s)
        observe(lag_s)
        if lag_s > max_lag.seconds:
            max_lag.seconds = lag_s
            gauge.set(lag_s)
