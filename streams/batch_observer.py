"""Histogram observations gathered per batch and added at once (worker and sink)."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


class BatchObserver:
    """Observations of one batch, added to a histogram at once: a bisect per value, then one
    locked increment per touched bucket per batch. ``Histogram.observe`` takes a lock and walks
    the buckets on every call (about 1.5 us each, three per event on the hot path).

    Relies on prometheus-client's ``_upper_bounds``, ``_buckets`` and ``_sum`` (the fields
    ``observe`` itself uses); tests/unit/test_metrics.py checks the result equals ``observe``.
    """

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        self._bounds: list[float] = list(histogram._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        buckets = self._histogram._buckets
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
                counts[i] = 0
        self._histogram._sum.inc(self._sum)
        self._sum = 0.0
