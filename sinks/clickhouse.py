"""ClickHouseWriter: columnar inserts per table per batch, retried until ClickHouse has them;
rows ClickHouse can never take are handed back instead of halting the batch.

Delivery guarantee: at least once into ClickHouse, exactly once in query results. ``write``
returns only after every row of the batch was either acknowledged by the server or rejected
(``WriteStats.rejected``: the row's table, its position and the ClickHouse error); the caller
delivers the rejected rows somewhere durable (the sink dead-letter topic) and commits the
batch's Kafka offsets after that, never before.

Failure behaviour (classes of :func:`sinks.retry.classify`):

- transient and operator errors (ClickHouse unreachable, timeouts, overload, too many parts,
  a missing table or wrong credentials) are retried with the identical rows per the
  :class:`~sinks.retry.RetryPolicy` (the production policy never gives up), reconnecting each
  time; inserts already acknowledged in this call are not sent again.
- permanent errors (a value a column cannot hold, too many partitions in one insert block, an
  unknown code): the failed insert is bisected until the smallest failing rows are found; those
  are rejected, all the others are written.
- Before any insert, each column's values are checked against its type's range
  (:func:`sinks.rows.out_of_range`): rows that cannot fit are rejected without a round trip.
- Each table's rows are split so that no insert touches more than
  :data:`~sinks.rows.MAX_PARTITIONS_PER_INSERT` monthly partitions.

A redelivered batch (crash or rebalance between the insert and the offset commit) is collapsed
by the ReplacingMergeTree tables, so ``count()`` with FINAL equals ``uniqExact(event_id)``; the
materialized hourly rollups count such a batch twice (see docs/clickhouse.md). The same holds
for the rows of a failed multi-partition insert that the server had already written before the
error: they are sent again with their half.

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

from sinks.retry import RetriesExhausted, RetryPolicy, RetryStopped, error_code
from sinks.rows import (
    TABLE_COLUMNS,
    VALUE_OUT_OF_RANGE,
    Row,
    out_of_range,
    split_by_partition,
)


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


class BatchWriter(Protocol):
    """What the sink's store loop writes with: a :class:`ClickHouseWriter`, or
    :class:`sinks.table_writers.TableWriters` (the tables of a batch at once)."""

    observer: WriterObserver

    def write(self, batch: Mapping[str, Sequence[Row]]) -> WriteStats: ...

    def ping(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row ClickHouse cannot take: its table, its position in that table's rows of the batch,
    the ClickHouse error code (0 if the error had none) and the error text."""

    table: str
    index: int
    code: int
    message: str


@dataclass
class WriteStats:
    """What one ``write`` did: rows written per table, rows rejected, insert attempts, failed
    attempts that were retried, inserts that failed permanently (bisection steps), wall time."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    bisections: int = 0
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
        check_ranges: bool = True,
    ) -> None:
        """``check_ranges=False`` leaves every value to the server, whose refusals are then
        bisected like any other permanent error (the tests use it to reach that path)."""
        self.client = client
        self.check_ranges = check_ranges
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
        secure: bool = False,
        ca_certs: str | None = None,
        verify: bool = True,
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
            secure=secure,
            verify=verify,
            ca_certs=ca_certs,
        )
        return cls(client, database=database, retry=retry, observer=observer)

    def stop(self) -> None:
        """End any retry wait now; the pending ``write`` raises RetryStopped."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self.client.disconnect()

    def ping(self) -> None:
        """Return once ClickHouse answers ``SELECT 1`` on the writer's database, retrying
        per the policy (the production policy waits forever; ``stop()`` ends the wait)."""

        def attempt() -> None:
            try:
                self.client.execute("SELECT 1")
            except Exception:
                self.client.disconnect()
                raise

        def on_retry(failures: int, error: BaseException, delay_s: float) -> None:
            self.observer.retry("(connect)", failures, error, delay_s)

        self.retry.call(attempt, on_retry=on_retry, stop=self._stop)

    def write(self, batch: Mapping[str, Sequence[Row]]) -> WriteStats:
        """Insert every table's rows; return when each row is in ClickHouse or rejected.

        Raises RetryStopped after ``stop()`` or RetriesExhausted from a bounded policy; the
        batch must then not be committed.
        """
        stats = WriteStats()
        started = self._clock()
        self.observer.batch_rows(sum(len(rows) for rows in batch.values()))
        for table, rows in batch.items():
            self._write_table(table, rows, stats)
        stats.seconds = self._clock() - started
        return stats

    def write_table(self, table: str, rows: Sequence[Row]) -> WriteStats:
        """Insert one table's rows of a batch, as :meth:`write` does (the batch size is not
        observed: the caller that splits a batch observes it)."""
        stats = WriteStats()
        started = self._clock()
        self._write_table(table, rows, stats)
        stats.seconds = self._clock() - started
        return stats

    def _write_table(self, table: str, rows: Sequence[Row], stats: WriteStats) -> None:
        if not rows:
            return
        width = len(TABLE_COLUMNS[table])
        try:
            columns: list[Sequence[Any]] | None = to_columns(rows, width)
        except ValueError:  # a row of the wrong width: the bisection below isolates it
            columns = None
        bad = out_of_range(table, columns) if self.check_ranges and columns is not None else {}
        for index, reason in sorted(bad.items()):
            stats.rejected.append(Rejected(table, index, VALUE_OUT_OF_RANGE, reason))
        if bad:
            positions = [i for i in range(len(rows)) if i not in bad]
            fitting: Sequence[Row] = [rows[i] for i in positions]
            columns = None
        else:
            positions, fitting = list(range(len(rows))), rows
        written = 0
        for group in split_by_partition(table, fitting):
            whole = len(group) == len(fitting)
            written += self._insert_or_bisect(
                table, fitting if whole else [fitting[i] for i in group],
                [positions[i] for i in group], stats, columns if whole else None,
            )
        stats.rows[table] = written

    def _insert_or_bisect(
        self, table: str, rows: Sequence[Row], positions: list[int], stats: WriteStats,
        columns: list[Sequence[Any]] | None = None,
    ) -> int:
        """Insert ``rows`` (``columns``: the same rows as columns, when the caller has them);
        on a permanent error, halve until the failing rows are alone and reject those. Return
        the number of rows written."""
        width = len(TABLE_COLUMNS[table])
        sql = insert_sql(self.database, table)
        written = 0
        pending: list[tuple[Sequence[Row], list[int]]] = [(rows, positions)]
        while pending:
            part, where = pending.pop()
            try:
                if columns is None or part is not rows:
                    columns = to_columns(part, width)
                self._insert(table, sql, columns, len(part), stats)
            except Exception as error:
                if not self._permanent(error):
                    raise
                stats.bisections += 1
                if len(part) == 1:
                    stats.rejected.append(
                        Rejected(table, where[0], error_code(error), _text(error))
                    )
                    continue
                half = len(part) // 2
                # Right half pushed first: the left one is tried first (stable order).
                pending.append((part[half:], where[half:]))
                pending.append((part[:half], where[:half]))
                continue
            written += len(part)
        return written

    def _permanent(self, error: BaseException) -> bool:
        if isinstance(error, RetryStopped | RetriesExhausted):
            return False
        return not self.retry.is_retryable(error)

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


def _text(error: BaseException) -> str:
    """The error's type and text without a server stack trace, at most 1,000 characters."""
    text = f"{type(error).__name__}: {error}".split("Stack trace", 1)[0].strip()
    return text if len(text) <= 1000 else text[:997] + "..."
