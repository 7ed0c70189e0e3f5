"""The deadline index: due customers per partition, newest deadline wins, no scans."""

from __future__ import annotations

from streams.deadlines import DeadlineIndex


def test_due_customers_come_out_once_in_deadline_order() -> None:
    index = DeadlineIndex()
    index.set(0, "b", 20.0)
    index.set(0, "a", 10.0)
    index.set(1, "c", 5.0)
    assert index.pop_due(0, 15.0, 10) == ["a"]
    assert index.pop_due(0, 15.0, 10) == []
    assert index.pop_due(0, 30.0, 10) == ["b"]
    assert index.pop_due(1, 30.0, 10) == ["c"] and len(index) == 0


def test_a_newer_deadline_replaces_the_older_and_none_removes_it() -> None:
    index = DeadlineIndex()
    index.set(0, "a", 10.0)
    index.set(0, "a", 50.0)
    assert index.pop_due(0, 20.0, 10) == []  # the stale heap entry is skipped
    assert index.pop_due(0, 60.0, 10) == ["a"]
    index.set(0, "b", 10.0)
    index.set(0, "b", None)
    assert index.pop_due(0, 60.0, 10) == [] and len(index) == 0


def test_the_limit_leaves_the_rest_for_later() -> None:
    index = DeadlineIndex()
    for n in range(5):
        index.set(0, f"c{n}", float(n))
    assert index.pop_due(0, 10.0, 2) == ["c0", "c1"]
    assert index.pop_due(0, 10.0, 10) == ["c2", "c3", "c4"]


def test_a_rebuild_never_overwrites_a_newer_deadline_and_a_moved_partition_is_dropped() -> None:
    index = DeadlineIndex()
    index.set(0, "a", 100.0)  # set by an event while the rebuild ran
    index.add_if_absent(0, "a", 5.0)  # the stored, older state
    index.add_if_absent(0, "b", 5.0)
    assert index.pop_due(0, 50.0, 10) == ["b"]
    index.set(1, "z", 1.0)
    index.drop_partition(0)
    assert len(index) == 1 and index.pop_due(0, 1000.0, 10) == []
    assert index.pop_due(1, 1000.0, 10) == ["z"]
