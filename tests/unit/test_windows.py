"""Event-time windows: tumbling buckets, trend, timed lists (order independence, caps)."""

from __future__ import annotations

import random

from streams.core.windows import (
    bucket_prune,
    timed_between,
    timed_insert,
    timed_prune,
)


def test_bucket_prune() -> None:
    b = {i: 1.0 for i in range(10)}
    bucket_prune(b, 7)
    assert sorted(b) == [7, 8, 9]
    bucket_prune(b, 0)
    assert sorted(b) == [7, 8, 9]


def test_timed_insert_keeps_time_order_and_cap() -> None:
    items: list[tuple[float, str]] = []
    for t in (5.0, 1.0, 3.0, 9.0, 7.0):
        timed_insert(items, (t, f"e{t:g}"), cap=4)
    assert [t for t, _ in items] == [3.0, 5.0, 7.0, 9.0]  # the oldest fell off


def test_timed_insert_in_any_order_gives_the_same_list() -> None:
    recs = [(float(i), str(i)) for i in range(30)]
    a: list[tuple[float, str]] = []
    for r in recs:
        timed_insert(a, r, cap=100)
    b: list[tuple[float, str]] = []
    shuffled = list(recs)
    random.Random(2).shuffle(shuffled)
    for r in shuffled:
        timed_insert(b, r, cap=100)
    assert a == b


def test_timed_prune_and_between_are_inclusive_where_documented() -> None:
    items = [(float(t), str(t)) for t in range(10)]
    assert [t for t, _ in timed_between(items, 2.0, 4.0)] == [2.0, 3.0, 4.0]
    timed_prune(items, 4.0)
    assert items[0][0] == 4.0 and len(items) == 6
    timed_prune(items, 100.0)
    assert items == []
