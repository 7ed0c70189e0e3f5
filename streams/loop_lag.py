"""Event-loop lag: how late a periodic wake-up runs, i.e. how long something blocked the loop.

Both processes run :func:`watch_loop_lag` for their lifetime; the histogram
``cx_event_loop_lag_seconds`` shows stalls (a long synchronous step delays every message
behind it), and :data:`max_lag` keeps the largest one seen for the benchmark.
"""

from __future__ import annotations

import asyncio
import time

from streams import metrics

INTERVAL_S = 0.05


class _Max:
    seconds = 0.0


max_lag = _Max()


async def watch_loop_lag(interval_s: float = INTERVAL_S) -> None:
    """Sleep ``interval_s`` again and again and record how much later than asked it woke."""
    clock = time.monotonic
    observe = metrics.event_loop_lag.observe
    gauge = metrics.event_loop_lag_max
    while True:
        started = clock()
        await asyncio.sleep(interval_s)
        lag_s = max(0.0, clock() - started - interval_s)
        observe(lag_s)
        if lag_s > max_lag.seconds:
            max_lag.seconds = lag_s
            gauge.set(lag_s)
