"""The packed product views (streams/core/product_views.py): the same views and the same answers
as the timed list of records they replaced (streams/core/windows.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from streams.core.product_views import ProductViews
from streams.core.state import MAX_VIEWS, CustomerState, short_hash
from streams.core.windows import timed_between, timed_insert, timed_prune


def _reference_find(records: list[Any], key: int, lo_t: float, hi_t: float,
                    min_count: int) -> tuple[float, list[str]] | None:
    """What the browse-intent rule computed from the records before."""
    views = [v for v in timed_between(records, lo_t, hi_t) if v[2] == key]
    if len(views) < min_count:
        return None
    return views[0][0], [v[1] for v in views]


def test_inserts_prunes_and_finds_match_the_timed_list_it_replaced() -> None:
    rng = random.Random(5)
    packed, reference = ProductViews(), list[Any]()
    keys = [short_hash(f"p-{i}") for i in range(4)]  # few products: runs of the same one
    t = 1_700_000_000.0
    found = longest = 0
    for i in range(20_000):
        t += rng.choice([0.0, 0.5, 3.0, 60.0, 400.0])
        at = t - rng.choice([0.0, 0.0, 0.0, 2.0, 120.0])  # some late, behind newer views
        key = rng.choice(keys)
        packed.insert(at, f"e-{i}", key, MAX_VIEWS)
        timed_insert(reference, (at, f"e-{i}", key), MAX_VIEWS)
        if i % 7 == 0:
            packed.prune(t - 1_800)
            timed_prune(reference, t - 1_800)
        lo_t = t - rng.choice([60.0, 600.0, 3_600.0])
        hi_t = t - rng.choice([0.0, 0.0, 30.0])  # an event before the newest view, too
        for min_count in (1, 3):
            answer = packed.find(key, lo_t, hi_t, min_count)
            assert answer == _reference_find(reference, key, lo_t, hi_t, min_count)
            found += answer is not None
        assert packed.records() == reference
        longest = max(longest, len(packed))
    assert found > 1_000  # the rule's positive branch was compared too
    assert longest == MAX_VIEWS  # and the cap bit


def test_equal_times_keep_the_order_of_arrival() -> None:
    views = ProductViews()
    for event_id, t in (("a", 10.0), ("b", 20.0), ("c", 10.0), ("d", 5.0)):
        views.insert(t, event_id, 7, MAX_VIEWS)
    assert [r[1] for r in views.records()] == ["d", "a", "c", "b"]
    assert views.find(7, 10.0, 10.0, 2) == (10.0, ["a", "c"])
    assert views.find(7, 10.0, 10.0, 3) is None
    assert views.find(8, 0.0, 30.0, 1) is None
    assert ProductViews().find(7, 0.0, 30.0, 1) is None


def test_the_cap_drops_the_oldest() -> None:
    views = ProductViews()
    for i in range(10):
        views.insert(float(i), f"e{i}", 1, 4)
    assert [r[1] for r in views.records()] == ["e6", "e7", "e8", "e9"]
    views.insert(0.5, "late", 1, 4)  # older than everything kept: in, then out again
    assert [r[1] for r in views.records()] == ["e6", "e7", "e8", "e9"]


def test_the_wire_form_round_trips_and_rejects_columns_that_do_not_pair_up() -> None:
    views = ProductViews.from_records([(1.5, "e1", 2**31 - 1), (2.5, "e2", 0)])
    times, keys, ids = views.wire()
    assert len(times) == 16 and len(keys) == 8 and ids == ["e1", "e2"]
    assert ProductViews.from_wire(times, keys, list(ids)) == views
    with pytest.raises(ValueError, match="not one view each"):
        ProductViews.from_wire(times, keys, ["e1"])
    with pytest.raises(ValueError, match="not one view each"):
        ProductViews.from_wire(times[:-1], keys, ids)


def test_a_state_stores_its_views_packed_and_reads_records_of_older_formats() -> None:
    records = [(1.5, "e1", 11), (2.5, "e2", 12)]
    st = CustomerState(views=records)
    back = CustomerState.from_bytes(st.to_bytes())
    assert back == st and back.views.records() == records
    assert st.as_dict()["views"] == records  # records for the CLI's state view and recompute
    assert repr(back.views) == "ProductViews(2 views)"


def test_the_packed_columns_are_little_endian_whatever_the_machine() -> None:
    import struct
    from array import array

    from streams.core.packed_arrays import extend_le, le_bytes

    times, keys = array("d", [1.5, -2.0]), array("i", [7, -1])
    assert le_bytes(times) == struct.pack("<2d", 1.5, -2.0)
    assert le_bytes(keys) == struct.pack("<2i", 7, -1)
    back = array("d", [0.5])
    extend_le(back, le_bytes(times))
    assert back == array("d", [0.5, 1.5, -2.0])
