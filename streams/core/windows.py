"""Event-time windows kept inside the per-customer state.

Two shapes, both plain Python containers so that the state serializes cheaply:

* **Tumbling buckets** ``dict[int, float]`` keyed by ``floor(t / width_s)``: hourly buckets (the
  highest experience score seen in each hour, for the 24 h drop rule) and daily buckets (activity
  counts, for the 7-day vs previous-28-day trend), written by the engine. Adding to a bucket is
  commutative, so buckets are order-independent; a bucket older than its retention is deleted by
  :func:`bucket_prune`.
* **Timed lists**: small lists of tuples sorted by event time (first tuple field), with a time
  retention and a hard length cap (oldest dropped first). A late event is inserted at its place
  with ``bisect``, so the list content does not depend on arrival order (until the cap bites).

Times are epoch seconds (float); nothing here reads the wall clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Any, Final, TypeVar

HOUR_S: Final = 3600
DAY_S: Final = 86_400
WEEK_S: Final = 7 * DAY_S

T = TypeVar("T", bound=tuple[Any, ...])


def bucket_prune(buckets: dict[int, float], min_index: int) -> None:
    """Delete buckets older than ``min_index``; the dicts hold a few dozen keys at most."""
    if buckets and min(buckets) < min_index:  # usually nothing is that old
        for key in [k for k in buckets if k < min_index]:
            del buckets[key]


def timed_insert(items: list[T], item: T, cap: int) -> None:
    """Insert ``item`` (first field: event time) in time order; keep the newest ``cap``."""
    if not items or item[0] >= items[-1][0]:
        items.append(item)  # the in-order case: no search
    else:
        insort(items, item, key=lambda it: it[0])
    if len(items) > cap:
        del items[: len(items) - cap]


def timed_prune(items: list[T], min_t: float) -> None:
    """Drop the items with event time before ``min_t``."""
    if items and items[0][0] < min_t:
        del items[: bisect_left(items, min_t, key=lambda it: it[0])]


def timed_between(items: list[T], lo_t: float, hi_t: float) -> list[T]:
    """Items with ``lo_t <= time <= hi_t`` (inclusive both ends), in time order."""
    if not items:
        return []
    start = 0 if items[0][0] >= lo_t else bisect_left(items, lo_t, key=_time_of)
    if items[-1][0] <= hi_t:  # the usual case: nothing after the current event
        return items[start:]
    return items[start : bisect_right(items, hi_t, lo=start, key=_time_of)]


def _time_of(item: tuple[Any, ...]) -> Any:
    return item[0]
