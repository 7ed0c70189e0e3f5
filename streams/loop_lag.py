"""Event-loop lag: how late a periodic wake-up runs, i.e. how long something blocked the loop.

Both processes run :func:`watch_loop_lag` for their lifetime; the histogram
``cx_event_loop_lag_seconds`` shows stalls (a long synchronous step delays every message
behind it), and :data:`max_lag` keeps the largest one seen for the benchmark.

A stall says that the loop was blocked, not by what. With ``stall_dump_s`` > 0 the watcher
also keeps :func:`faulthandler.dump_traceback_later` armed, pushed back every ``REARM_S``:
when the loop stays blocked for ``stall_dump_s`` or more, CPython's watchdog thread writes
every thread's Python stack to stderr once, while the stall lasts (within ``REARM_S`` plus one
wake-up interval after the threshold; it needs no GIL, so a C call that holds it is caught
too; compiled functions show as the interpreted frame that called them). A shorter stall
never dumps. The output starts with ``Timeout (0:00:02.300000)!`` (the armed delay). Cost:
re-arming starts a watchdog thread every ``REARM_S``: ~53 us each, ~0.02 % of a core.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import sys
import time
from typing import TextIO

from prometheus_client import Gauge, Histogram

log = logging.getLogger(__name__)

INTERVAL_S = 0.05
# How often the stack dump's deadline is pushed back while the loop runs.
REARM_S = 0.25

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


async def watch_loop_lag(interval_s: float = INTERVAL_S, *, stall_dump_s: float = 0.0,
                         dump_to: TextIO | None = None) -> None:
    """Sleep ``interval_s`` again and again and record how much later than asked it woke;
    with ``stall_dump_s`` > 0, dump every thread's stack (to ``dump_to``, default the
    process's original stderr: Faust replaces ``sys.stderr`` with a logging proxy that has no
    file descriptor) when the loop stays blocked about that long (see the module docstring).
    Runs until cancelled; the dump is disarmed then. A target the dump cannot write to turns
    the dump off with a warning; the lag is recorded all the same."""
    clock = time.monotonic
    observe = event_loop_lag.observe
    gauge = event_loop_lag_max
    target = dump_to if dump_to is not None else sys.__stderr__
    if target is None and stall_dump_s > 0:
        log.warning("stack dumps of event-loop stalls are off: the process has no stderr")
    armed_at = -REARM_S
    try:
        while True:
            started = clock()
            if stall_dump_s > 0 and target is not None and started - armed_at >= REARM_S:
                try:
                    # armed again within REARM_S + interval_s + the lag: only a lag of
                    # stall_dump_s or more lets the delay run out
                    faulthandler.dump_traceback_later(stall_dump_s + REARM_S + interval_s,
                                                      repeat=False, file=target)
                except (AttributeError, NotImplementedError, OSError, ValueError,
                        RuntimeError) as exc:
                    log.warning("stack dumps of event-loop stalls are off: cannot write them "
                                "to %r (%s: %s)", target, type(exc).__name__, exc)
                    stall_dump_s = 0.0
                armed_at = started
            await asyncio.sleep(interval_s)
            lag_s = max(0.0, clock() - started - interval_s)
            observe(lag_s)
            if lag_s > max_lag.seconds:
                max_lag.seconds = lag_s
                gauge.set(lag_s)
    finally:
        if stall_dump_s > 0:
            faulthandler.cancel_dump_traceback_later()
