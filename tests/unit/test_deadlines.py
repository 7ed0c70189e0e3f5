"""The deadline index: due customers per partition, newest deadline wins, no scans."""

from __future__ import annotations

import random

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


def test_a_deadline_that_moves_later_keeps_one_entry_and_fires_at_the_latest() -> None:
    """Each checkpoint moves an active customer's risk look later: the heap must not keep an
    entry per move (it used to, ~5 min / checkpoint interval of them per active customer)."""
    index = DeadlineIndex()
    for n in range(100):
        index.set(0, "a", 300.0 + n)
    assert index.entries() == 1
    assert index.pop_due(0, 398.0, 10) == [] and index.entries() == 1  # moved on to 399
    assert index.pop_due(0, 399.0, 10) == ["a"] and index.entries() == 0 and len(index) == 0


def test_a_deadline_moved_earlier_fires_then_and_the_replaced_entry_is_skipped() -> None:
    index = DeadlineIndex()
    index.set(0, "a", 50.0)
    index.set(0, "a", 20.0)
    assert index.pop_due(0, 20.0, 10) == ["a"]
    assert index.pop_due(0, 100.0, 10) == [] and index.entries() == 0
    index.set(0, "b", 50.0)
    index.set(1, "b", 60.0)  # its partition moved (a rebuild after a rebalance)
    assert index.pop_due(0, 100.0, 10) == []
    assert index.pop_due(1, 100.0, 10) == ["b"] and len(index) == 0


def test_random_deadlines_come_out_as_a_plain_map_of_them_says() -> None:
    """Against a reference model: the customers due are exactly those whose latest deadline
    passed, each once, and the heap stays near one entry per customer."""
    rng = random.Random(7)
    index = DeadlineIndex()
    model: dict[str, tuple[int, float]] = {}
    earlier = 0
    now = 0.0
    for _step in range(20_000):
        customer = f"c{rng.randrange(200)}"
        roll = rng.random()
        if roll < 0.7:
            partition = rng.randrange(2) if rng.random() < 0.05 else int(customer[1:]) % 2
            wake = now + rng.uniform(0.0, 50.0)
            old = model.get(customer)
            if old is not None and (old[0] != partition or wake < old[1]):
                earlier += 1
            index.set(partition, customer, wake)
            model[customer] = (partition, wake)
        elif roll < 0.8:
            index.set(0, customer, None)
            model.pop(customer, None)
        else:
            now += rng.uniform(0.0, 5.0)
            for partition in (0, 1):
                due = index.pop_due(partition, now, 1_000_000)
                expected = {c for c, (p, w) in model.items() if p == partition and w <= now}
                assert sorted(due) == sorted(expected)
                for customer_id in due:
                    del model[customer_id]
        assert len(index) == len(model)
    assert index.entries() <= 200 + earlier
