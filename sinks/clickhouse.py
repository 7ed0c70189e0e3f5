"""ClickHouseWriter: one columnar insert per table per batch, retried until ClickHouse has it.

Delivery guarantee: at least once into ClickHouse, exactly once in query results. ``write``
returns only after every table's rows of the batch were acknowledged by the server; the caller
commits the batch's Kafka offsets after that and never before. Transient failures (connection
refused or reset, timeouts, overload codes) are retried with the identical rows per the
:class:`~sinks.retry.RetryPolicy` (the production policy never gives up), reconnecting each
time; tables already written in this call are not sent again. A failure the policy does not
retry (a schema mismatch, a bad value) is raised unchanged: nothing is skipped, the batch stays
uncommitted and the worker stops. A redelivered batch (crash or rebalance between the insert and
the offset commit) is collapsed by the ReplacingMergeTree tables, so ``count()`` with FINAL
equals ``uniqExact(event_id)``; the materialized hourly rollups count such a batch twice (see
docs/clickhouse.md).

``write`` blocks (clickhouse-driver is synchronous): call it from a worker thread, e.g.
``await loop.run_in_executor(None, writer.write, rows)``, and call ``stop()`` at shutdown to end
a retry wait early (``write`` then raises RetryStopped and the batch is not committed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sinks.retry import RetryPolicy
from sinks.rows import TABLE_COLUMNS, Row


class WriterObserver(Protocol):
    """Metrics hooks; the worker wires them to Prometheus. Calls happen in the writer thread."""

    def rows_written(self, table: str, rows: int) -> None: ...

    def insert_seconds(self, table: str, seconds: float) -> None: ...

    def batch_rows(self, rows: int) -> None: ...

    def retry(self, table: str, failures: int, error: BaseException, delay_s: float) -> None: ...

    def failure(self, table: str, error: BaseException) -> None: ...


class NullObserver:
    """Observer that records nothing."""

    def rows_written(self, table: str, rows: int) -> None:
        pass

    def insert_seconds(self, table: str, seconds: float) -> None:
        pass

    def batch_rows(self, rows: int) -> None:
        pass

    def retry(self, table: str, failures: int, error: BaseException, delay_s: float) -> None:
        pass

    def failure(self, table: str, error: BaseException) -> None:
        pass


@dataclass
class WriteStats:
    """What one ``write`` did: rows per table, insert attempts, failed attempts, wall time."""

    rows: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def insert_sql(database: str, table: str, columns: Sequence[str] | None = None) -> str:
    cols = TABLE_COLUMNS[table] if columns is None else columns
    return f"INSERT INTO {database}.{table} ({', '.join(cols)}) VALUES"


def to_columns(rows: Sequence[Row], width: int) -> list[Sequence[Any]]:
    """Transpose rows into columns (zip runs in C, much faster than per-row appends)."""
    if not rows:
        return [[] for _ in range(width)]
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    if len(columns) != width:
        raise ValueError(f"rows have {len(columns)} columns, the table has {width}")
    return columns


class ClickHouseWriter:
    """Writes batches of rows (``{table: [row tuple, ...]}``, tuples as built by sinks.rows)."""

    def __init__(
        self,
        client: Any,
        *,
        database: str,
        retry: RetryPolicy | None = None,
        observer: WriterObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.client = client
        self.database = database
        self.retry = retry if retry is not None else RetryPolicy()
        self.observer: WriterObserver = observer if observer is not None else NullObserver()
        self._clock = clock
        self._stop = threading.Event()

    @classmethod
    def from_params(
        cls,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        retry: RetryPolicy | None = None,
        observer: WriterObserver | None = None,
        connect_timeout_s: float = 5.0,
        send_receive_timeout_s: float = 60.0,
    ) -> ClickHouseWriter:
        """A writer with its own clickhouse-driver Client (connects lazily, on first insert)."""
        from clickhouse_driver import Client

        client = Client(
            host=host,
            port=port,
            user=user,
            password=password,
            database=database,
            connect_timeout=connect_timeout_s,
            send_receive_timeout=send_receive_timeout_s,
            # LZ4 would cost CPU on the loopback link without saving wall time.
            compression=False,
        )
        return cls(client, database=database, retry=retry, observer=observer)

    def stop(self) -> None:
        """End any retry wait now; the pending ``write`` raises RetryStopped."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self.client.disconnect()

    def write(self, batch: Mapping[str, Sequence[Row]]) -> WriteStats:
        """Insert every table's rows, one columnar insert per table; return when all are in.

        Raises RetryStopped after ``stop()``, RetriesExhausted from a bounded policy, or the
        first non-transient error; the batch must then not be committed.
        """
        stats = WriteStats()
        started = self._clock()
        self.observer.batch_rows(sum(len(rows) for rows in batch.values()))
        for table, rows in batch.items():
            if not rows:
                continue
            width = len(TABLE_COLUMNS[table])
            columns = to_columns(rows, width)
            sql = insert_sql(self.database, table)
            self._insert(table, sql, columns, len(rows), stats)
            stats.rows[table] = len(rows)
        stats.seconds = self._clock() - started
        return stats

    def _insert(
        self, table: str, sql: str, columns: list[Sequence[Any]], count: int, stats: WriteStats
    ) -> None:
        def attempt() -> None:
            stats.attempts += 1
            began = self._clock()
            try:
                self.client.execute(sql, columns, columnar=True)
            except Exception as error:
                self.observer.failure(table, error)
                # Drop the connection: after a failure its state is unknown, and the next
                # attempt must start from a fresh handshake.
                self.client.disconnect()
                raise
            self.observer.insert_seconds(table, self._clock() - began)
            self.observer.rows_written(table, count)

        def on_retry(failures: int, error: BaseException, delay_s: float) -> None:
            stats.retries += 1
            self.observer.retry(table, failures, error, delay_s)

        self.retry.call(attempt, on_retry=on_retry, stop=self._stop)
