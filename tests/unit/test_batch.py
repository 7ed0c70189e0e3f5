"""BatchBuffer: due by size or age, in-batch dedup, offsets to commit."""

from __future__ import annotations

import pytest

from sinks.batch import BatchBuffer
from sinks.rows import ALERTS, TABLE_COLUMNS, TOUCHPOINT_EVENTS


def _event(event_id: str, marker: int = 0) -> tuple:
    width = len(TABLE_COLUMNS[TOUCHPOINT_EVENTS])
    return (event_id, *([marker] * (width - 1)))


def test_due_by_size() -> None:
    buf = BatchBuffer(max_rows=3, max_age_ms=10_000)
    for i in range(2):
        buf.add(TOUCHPOINT_EVENTS, _event(f"e{i}"), now_ms=0)
    assert not buf.due(0)
    buf.add(TOUCHPOINT_EVENTS, _event("e2"), now_ms=0)
    assert buf.due(0) and buf.ms_until_due(0) == 0


def test_due_by_age_of_the_oldest_row() -> None:
    buf = BatchBuffer(max_rows=100, max_age_ms=1000)
    assert not buf.due(10**9) and buf.ms_until_due(0) is None
    buf.add(TOUCHPOINT_EVENTS, _event("e1"), now_ms=500)
    buf.add(TOUCHPOINT_EVENTS, _event("e2"), now_ms=1400)
    assert buf.ms_until_due(1400) == 100
    assert not buf.due(1499)
    assert buf.due(1500)


def test_duplicates_inside_a_batch_are_written_once_last_wins() -> None:
    buf = BatchBuffer(max_rows=2, max_age_ms=1000)
    buf.add(TOUCHPOINT_EVENTS, _event("e1", marker=1), now_ms=0)
    buf.add(TOUCHPOINT_EVENTS, _event("e1", marker=2), now_ms=1)
    assert len(buf) == 1 and not buf.due(1)
    buf.add(TOUCHPOINT_EVENTS, _event("e2"), now_ms=2)
    batch = buf.drain()
    assert [row[0] for row in batch.rows[TOUCHPOINT_EVENTS]] == ["e1", "e2"]
    assert batch.rows[TOUCHPOINT_EVENTS][0][1] == 2
    assert (batch.added, batch.size, batch.duplicates) == (3, 2, 1)


def test_offsets_keep_the_highest_per_partition() -> None:
    buf = BatchBuffer(max_rows=10, max_age_ms=1000)
    buf.add(TOUCHPOINT_EVENTS, _event("a"), now_ms=0, source=("t", 0, 5))
    buf.add(TOUCHPOINT_EVENTS, _event("b"), now_ms=0, source=("t", 0, 3))
    buf.add(TOUCHPOINT_EVENTS, _event("c"), now_ms=0, source=("t", 1, 9))
    buf.mark(("t", 0, 8), now_ms=0)  # a message that produced no row
    assert buf.drain().offsets == {("t", 0): 8, ("t", 1): 9}


def test_a_marked_message_alone_makes_the_batch_due_by_age() -> None:
    buf = BatchBuffer(max_rows=10, max_age_ms=100)
    buf.mark(("t", 0, 1), now_ms=0)
    assert len(buf) == 0 and buf.due(100)


def test_drain_empties_the_buffer_and_keeps_tables_apart() -> None:
    buf = BatchBuffer(max_rows=10, max_age_ms=1000)
    buf.add(TOUCHPOINT_EVENTS, _event("e1"), now_ms=0)
    alert = ("a1", *([""] * (len(TABLE_COLUMNS[ALERTS]) - 1)))
    buf.add(ALERTS, alert, now_ms=0)
    buf.add("unkeyed_table", ("x",), now_ms=0)
    buf.add("unkeyed_table", ("x",), now_ms=0)
    batch = buf.drain()
    assert set(batch.rows) == {TOUCHPOINT_EVENTS, ALERTS, "unkeyed_table"}
    assert len(batch.rows["unkeyed_table"]) == 2  # no key: nothing is merged
    assert len(buf) == 0 and not buf.due(10**9)
    assert buf.drain().rows == {} and buf.drain().offsets == {}


@pytest.mark.parametrize(("rows", "age"), [(0, 10), (5, -1)])
def test_bounds_are_validated(rows: int, age: int) -> None:
    with pytest.raises(ValueError):
        BatchBuffer(max_rows=rows, max_age_ms=age)
