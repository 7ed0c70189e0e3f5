"""Positions in a column of event times kept in order: where a record goes, what a window or a
prune covers. Shared by the packed logs of a customer state (:mod:`streams.core.product_views`,
:mod:`streams.core.contact_log`, :mod:`streams.core.error_log`), whose other columns follow the
times column index for index.

Same semantics as the timed lists of :mod:`streams.core.windows`: a late record goes after the
records of the same time, a window is inclusive at both ends, a prune drops the records before
a time. Compiled with the engine (streams/core/native.py). No I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right


def insert_index(times: array[float], t: float) -> int:
    """Where a record of time ``t`` goes: at the end when it is the newest (no search), else
    after every record of the same time."""
    n = len(times)
    if not n or t >= times[n - 1]:
        return n
    return bisect_right(times, t)


def before_count(times: array[float], min_t: float) -> int:
    """How many records are older than ``min_t`` (the oldest first: what a prune drops)."""
    if not times or times[0] >= min_t:
        return 0
    return bisect_left(times, min_t)


def span(times: array[float], lo_t: float, hi_t: float) -> tuple[int, int]:
    """``(start, end)``: the records with ``lo_t <= time <= hi_t`` are ``start:end``."""
    n = len(times)
    if not n:
        return 0, 0
    start = 0 if times[0] >= lo_t else bisect_left(times, lo_t)
    end = n if times[n - 1] <= hi_t else bisect_right(times, hi_t, start)
    return start, max(start, end)
