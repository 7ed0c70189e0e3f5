"""The timed lists of records that the packed columns of a customer state replaced (product
views, support contacts, errors: streams/core/timed_columns.py and its users): the reference
the tests compare them with. :func:`streams.core.windows.timed_insert` is the third operation
(the engine still keeps pending carts and deferred alerts that way)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, TypeVar

T = TypeVar("T", bound=tuple[Any, ...])


def timed_prune(items: list[T], min_t: float) -> None:
    """Drop the items with event time before ``min_t``."""
    if items and items[0][0] < min_t:
        del items[: bisect_left(items, min_t, key=_time_of)]


def timed_between(items: list[T], lo_t: float, hi_t: float) -> list[T]:
    """Items with ``lo_t <= time <= hi_t`` (inclusive both ends), in time order."""
    if not items:
        return []
    start = 0 if items[0][0] >= lo_t else bisect_left(items, lo_t, key=_time_of)
    return items[start : bisect_right(items, hi_t, lo=start, key=_time_of)]


def _time_of(item: tuple[Any, ...]) -> Any:
    return item[0]
