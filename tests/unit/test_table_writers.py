"""TableWriters: each table of a batch over its own connection, the tables at once; the batch's
stats merged; an error of one table raised after the others finished; stop() reaches every
writer. The real server path runs in tests/integration (the sink uses TableWriters)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from sinks import rows as R
from sinks.clickhouse import ClickHouseWriter
from sinks.retry import RetryPolicy, RetryStopped
from sinks.table_writers import TableWriters
from tests.unit.test_sink_writer import _alert

TABLES = (R.TOUCHPOINT_EVENTS, R.CUSTOMER_SCORES, R.ALERTS)


class Client:
    """Records the inserts it is sent; each insert waits at ``barrier`` (all tables' inserts
    must be in flight together to pass it), then ``delay_s``, then raises ``error`` if set."""

    def __init__(self, barrier: threading.Barrier | None = None,
                 error: BaseException | None = None, delay_s: float = 0.0) -> None:
        self.barrier = barrier
        self.error = error
        self.delay_s = delay_s
        self.inserts: list[tuple[str, int]] = []
        self.threads: set[str] = set()

    def execute(self, sql: str, columns: Sequence[Sequence[Any]] = (), columnar: bool = False
                ) -> list[Any]:
        if not columns:
            return [(1,)]
        self.threads.add(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait()
        time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        table = sql.split()[2].split(".")[1]
        self.inserts.append((table, len(columns[0])))
        return []

    def disconnect(self) -> None:
        pass


class Observer:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.written: list[tuple[str, int]] = []

    def rows_written(self, table: str, rows: int) -> None:
        self.written.append((table, rows))

    def insert_seconds(self, table: str, seconds: float) -> None:
        pass

    def batch_rows(self, rows: int) -> None:
        self.batches.append(rows)

    def retry(self, table: str, failures: int, error: BaseException, delay_s: float) -> None:
        pass

    def failure(self, table: str, error: BaseException) -> None:
        pass


def _rows(table: str, n: int) -> list[tuple[Any, ...]]:
    width = len(R.TABLE_COLUMNS[table])
    if table == R.ALERTS:
        return [_alert(i) for i in range(n)]
    return [(f"x{i}",) + (0,) * (width - 1) for i in range(n)]


def _writers(clients: list[Client], observer: Observer) -> TableWriters:
    made = iter(clients)

    def new_writer() -> ClickHouseWriter:
        return ClickHouseWriter(next(made), database="cx", observer=observer,
                                retry=RetryPolicy(attempts=1), check_ranges=False)

    return TableWriters(new_writer, observer)


def test_the_tables_of_a_batch_are_inserted_at_once_each_over_its_own_connection() -> None:
    # The barrier lets an insert through only once all three are in flight: written one after
    # the other, the first would wait for ever (here: time out and fail the test).
    barrier = threading.Barrier(len(TABLES), timeout=10)
    clients = [Client(barrier) for _ in TABLES]
    observer = Observer()
    writers = _writers(clients, observer)
    batch = {table: _rows(table, 3 + n) for n, table in enumerate(TABLES)}
    try:
        stats = writers.write(batch)
    finally:
        writers.close()
    assert stats.rows == {table: 3 + n for n, table in enumerate(TABLES)}
    assert stats.attempts == len(TABLES) and not stats.rejected
    assert sorted(insert for c in clients for insert in c.inserts) == sorted(
        (table, 3 + n) for n, table in enumerate(TABLES))
    assert all(len(c.inserts) == 1 for c in clients)  # one table per connection
    assert len({name for c in clients for name in c.threads}) == len(TABLES)
    assert observer.batches == [sum(len(rows) for rows in batch.values())]  # observed once
    assert sorted(observer.written) == sorted(stats.rows.items())


def test_the_next_batch_reuses_each_tables_writer() -> None:
    clients = [Client() for _ in TABLES]
    writers = _writers(clients, Observer())
    try:
        for _ in range(2):
            writers.write({table: _rows(table, 2) for table in TABLES})
        writers.write({R.ALERTS: _rows(R.ALERTS, 1), R.CUSTOMER_SCORES: []})
    finally:
        writers.close()
    by_table = {c.inserts[0][0]: c for c in clients}
    assert set(by_table) == set(TABLES)
    assert [n for _t, n in by_table[R.ALERTS].inserts] == [2, 2, 1]
    assert len(by_table[R.CUSTOMER_SCORES].inserts) == 2  # its empty rows were not sent


def test_an_error_of_one_table_is_raised_after_the_other_tables_are_written() -> None:
    failing = Client(error=RetryStopped())
    # The last table is still being written when the failing one raises.
    clients = [Client(), failing, Client(delay_s=0.3)]
    writers = _writers(clients, Observer())
    try:
        with pytest.raises(RetryStopped):
            writers.write({table: _rows(table, 2) for table in TABLES})
    finally:
        writers.close()
    assert [len(c.inserts) for c in clients] == [1, 0, 1]


def test_stop_reaches_the_writers_made_so_far_and_later() -> None:
    writers = _writers([Client(), Client()], Observer())
    first = writers.writer(R.ALERTS)
    writers.stop()
    later = writers.writer(R.TOUCHPOINT_EVENTS)
    writers.close()
    assert first._stop.is_set() and later._stop.is_set()
