"""TableWriters: the tables of one batch inserted at once, each over its own ClickHouse
connection.

A sink batch holds rows for several tables (touchpoint events, scores, alerts, dead letters).
One connection inserts them one after the other, so a batch's rows wait for the sum of the
inserts; at half load on the development box (~5,300 rows a batch) those were 207, 60 and
56 ms on average (touchpoint_events, customer_scores, alerts). Most of an insert's time is the
server's (receiving the block, writing a part), so three connections bring the wait down to
about the longest insert (docs/performance.md).

Delivery guarantee and failure behaviour: those of :meth:`ClickHouseWriter.write` for the whole
batch. :meth:`TableWriters.write` returns once every table's rows are in ClickHouse or rejected;
each table's inserts are retried or bisected by its own writer. When one table's write raises
(``RetryStopped`` after :meth:`stop`, ``RetriesExhausted`` from a bounded policy, a bug), the
other tables' writes are waited for and the first error, in table order, is raised: the batch
must not be committed, and its redelivery inserts the tables that did succeed again (collapsed
by the ReplacingMergeTree tables, like any redelivered batch; see docs/clickhouse.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sinks.clickhouse import ClickHouseWriter, NullObserver, WriterObserver, WriteStats
from sinks.rows import TABLE_COLUMNS, TOUCHPOINT_EVENTS, Row


class TableWriters:
    """One :class:`ClickHouseWriter` per table (made by ``new_writer``, each with its own
    connection, on the table's first batch) and a thread per table to run them.

    ``write`` blocks like ``ClickHouseWriter.write``: call it from a worker thread."""

    def __init__(self, new_writer: Callable[[], ClickHouseWriter],
                 observer: WriterObserver | None = None) -> None:
        self._new_writer = new_writer
        self.observer: WriterObserver = observer if observer is not None else NullObserver()
        self._writers: dict[str, ClickHouseWriter] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=len(TABLE_COLUMNS),
                                        thread_name_prefix="clickhouse-insert")

    def writer(self, table: str) -> ClickHouseWriter:
        """The writer of ``table`` (made on first use; stopped at once after :meth:`stop`)."""
        with self._lock:
            writer = self._writers.get(table)
            if writer is None:
                writer = self._writers[table] = self._new_writer()
                if self._stopped:
                    writer.stop()
            return writer

    def ping(self) -> None:
        """Return once ClickHouse answers (over the touchpoint table's connection)."""
        self.writer(TOUCHPOINT_EVENTS).ping()

    def write(self, batch: Mapping[str, Sequence[Row]]) -> WriteStats:
        """Insert every table's rows, the tables at once; return when each row is in
        ClickHouse or rejected. Raises as described in the module docstring."""
        started = time.perf_counter()
        tables = [table for table, rows in batch.items() if rows]
        self.observer.batch_rows(sum(len(batch[table]) for table in tables))
        futures: list[Future[WriteStats]] = [
            self._pool.submit(self.writer(table).write_table, table, batch[table])
            for table in tables
        ]
        wait(futures)  # every table finished, before any error is raised
        results = [future.result() for future in futures]
        stats = WriteStats()
        for result in results:
            stats.rows.update(result.rows)
            stats.rejected.extend(result.rejected)
            stats.attempts += result.attempts
            stats.retries += result.retries
            stats.bisections += result.bisections
        stats.seconds = time.perf_counter() - started
        return stats

    def stop(self) -> None:
        """End every retry wait now; a pending ``write`` raises ``RetryStopped``."""
        with self._lock:
            self._stopped = True
            writers = list(self._writers.values())
        for writer in writers:
            writer.stop()

    def close(self) -> None:
        self.stop()
        with self._lock:
            writers = list(self._writers.values())
        for writer in writers:
            writer.close()
        self._pool.shutdown(wait=False)
