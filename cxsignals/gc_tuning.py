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
"""

from __future__ import annotations

import gc

YOUNG_ALLOCATIONS = 500_000
"""Net container allocations between young-generation collections (CPython default 700)."""
YOUNG_COLLECTIONS_PER_MIDDLE = 20
"""Young collections between collections of the middle generation (default 10)."""
MIDDLE_COLLECTIONS_PER_FULL = 100
"""Middle collections between full collections (default 10; CPython also waits until the
survivors since the last full collection exceed a quarter of the old generation)."""


def tune_collector() -> None:
    """Freeze the objects allocated so far and set the thresholds above (process-wide: call
    once, after start-up, from the command that runs the process)."""
    gc.freeze()
    gc.set_threshold(YOUNG_ALLOCATIONS, YOUNG_COLLECTIONS_PER_MIDDLE,
                     MIDDLE_COLLECTIONS_PER_FULL)
