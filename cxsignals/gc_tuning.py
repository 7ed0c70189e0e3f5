"""The garbage collector's settings for the long-running processes (``worker``, ``sink``).

Both allocate many short-lived objects per record (decoded events, rows, records), and almost
none of them are cyclic garbage: reference counting frees them. With CPython's default
thresholds (700, 10, 10) the collector ran 977 young and 8 full collections in the sink while
it wrote 100,000 events (0.64 s, about a quarter of its CPU, most of it in full collections
that walk every buffered row), and the worker's earlier (50,000, 20, 100) still spent 0.17 s
in young collections per 100,000 events (e2e bench, measured with ``gc.callbacks``).

:func:`tune_collector` freezes what start-up allocated (modules, the app, settings: never
garbage) and collects the young generation only every :data:`YOUNG_ALLOCATIONS` net
allocations. Cyclic garbage (rare here: exceptions with tracebacks, some asyncio objects)
then waits longer to be freed; it is bounded by that count.

A young collection stops the event loop for as long as it walks the young generation, and
CPython counts *net* allocations: every object freed in an older generation lowers the count.
A worker in a steady state replaces its customers' state records (tuples, lists) at about the
rate it frees the old ones, so the count grows slowly while the young generation fills with
every record written since the last collection. With 500,000 the worker's young collections
came every 10-30 s at 12,000 events/s and stopped its loop for 174-356 ms (three of them in a
60-second latency run, measured with ``gc.callbacks``; the young generation held 410,000-550,000
objects, three quarters of them state tuples). The worker therefore collects every
:data:`WORKER_YOUNG_ALLOCATIONS` (every ~2 s at that rate, 22-76 ms each: about 2 % of its
time, and the e2e throughput stayed within the box's run-to-run spread). The sink keeps
:data:`YOUNG_ALLOCATIONS`: its rows die with their batch, and its collections took at most
15 ms.
"""

from __future__ import annotations

import gc

YOUNG_ALLOCATIONS = 500_000
"""Net container allocations between young-generation collections (CPython default 700)."""
WORKER_YOUNG_ALLOCATIONS = 50_000
"""The worker's: shorter stops of its event loop (see above)."""
YOUNG_COLLECTIONS_PER_MIDDLE = 20
"""Young collections between collections of the middle generation (default 10)."""
MIDDLE_COLLECTIONS_PER_FULL = 100
"""Middle collections between full collections (default 10; CPython also waits until the
survivors since the last full collection exceed a quarter of the old generation)."""


def tune_collector(young_allocations: int = YOUNG_ALLOCATIONS) -> None:
    """Freeze the objects allocated so far and set the thresholds above, the young one to
    ``young_allocations`` (process-wide: call once, after start-up, from the command that runs
    the process)."""
    gc.freeze()
    gc.set_threshold(young_allocations, YOUNG_COLLECTIONS_PER_MIDDLE,
                     MIDDLE_COLLECTIONS_PER_FULL)
