"""The worker's Python objects on transparent huge pages: what it is for and when it applies.

A worker keeps its customers' states in memory (~10,000 of ~55 small objects each, a few
hundred MiB of pymalloc arenas) and every event reads one state that was last touched long ago.
With 4 KiB pages each of those objects is a TLB miss on top of a cache miss.
:func:`use_huge_pages` installs ``streams._huge_arenas`` (streams/huge_arenas.c, built by
``make native``): from then on pymalloc's arenas come from 2 MiB-aligned chunks madvised for
transparent huge pages. ``bench.pipeline_bench`` with full states: 40.5-43.7 us CPU an event
against 50.9-51.7 without (three alternating pairs, docs/performance.md).

It needs the kernel's transparent huge pages in mode ``madvise`` or ``always``
(``/sys/kernel/mm/transparent_hugepage/enabled``); with ``never``, or without the compiled
module (no C compiler, ``NATIVE=0``), nothing is installed and the worker runs as before. The
memory a worker uses grows by at most a chunk (64 MiB of address space, resident as it is used).
Installed once per process, before the states are loaded (objects allocated earlier stay where
they are). Setting ``CX_HUGE_PAGES=false`` turns it off.
"""

from __future__ import annotations

import importlib
from pathlib import Path

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_PROBE_OBJECTS = 80_000  # one-tuples of ~56 bytes: ~4 MiB, more than any arena's free room


def thp_mode(path: Path = THP_ENABLED) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise`` or ``never``: the one
    in brackets), or None when the file is missing or unreadable (not Linux, no THP)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def use_huge_pages(path: Path = THP_ENABLED) -> str:
    """Serve this process's object arenas from huge pages when the kernel allows it; returns a
    line for the log saying what was done and why."""
    mode = thp_mode(path)
    if mode not in ("always", "madvise"):
        return (f"huge pages: off (transparent huge pages are {mode!r} in {path})"
                if mode is not None else f"huge pages: off (no {path})")
    try:
        arenas = importlib.import_module("streams._huge_arenas")
    except ImportError:
        return "huge pages: off (streams._huge_arenas is not compiled: make native)"
    before = arenas.stats()["arenas_served"]
    arenas.install()
    probe = [(i,) for i in range(_PROBE_OBJECTS)]  # a few MiB: pymalloc needs a new arena
    served = arenas.stats()["arenas_served"] - before
    del probe
    if not served:
        return ("huge pages: off (installed, but pymalloc asked for no arena of the size it "
                "serves: this Python's arena size differs from 1 MiB)")
    return f"huge pages: on (object arenas madvised; transparent huge pages {mode!r})"
