"""BatchBuffer: collects rows per table until a batch is due by size or by age (pure, no I/O).

Rows with the same dedup key (see :data:`sinks.rows.DEDUP_KEYS`) inside one batch are kept
once (the last one wins), so a redelivery that falls inside a batch never reaches ClickHouse
twice, not even the materialized rollups. The buffer also remembers, per Kafka topic and
partition, the highest offset it holds: the position to commit after the batch is written, and
per row the origin it was built from (the consumed record, opaque here), so that a row ClickHouse
rejects can be dead-lettered with the record it came from. Time is passed in (``now_ms``),
never read, so the buffer is deterministic under test.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sinks.rows import DEDUP_KEYS, Row


@dataclass(frozen=True)
class Batch:
    """A drained batch: rows per table, each row's origin (same positions; None when the row
    was added without one), and the highest offset per (topic, partition)."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    origins: dict[str, list[Any]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    added: int = 0

    @property
    def size(self) -> int:
        """Rows to write, after in-batch deduplication."""
        return sum(len(rows) for rows in self.rows.values())

    @property
    def duplicates(self) -> int:
        """Rows added but dropped as in-batch duplicates."""
        return self.added - self.size


class BatchBuffer:
    """Rows per table, due when ``max_rows`` unique rows are held or the oldest row is
    ``max_age_ms`` old; ``drain()`` hands the batch over and empties the buffer.

    Bounded by construction: ``due`` turns true at ``max_rows``, so a caller that flushes when
    due never holds more than ``max_rows`` rows (plus the row that made it due).
    """

    def __init__(
        self,
        *,
        max_rows: int,
        max_age_ms: int,
        keys: Mapping[str, Callable[[Row], Hashable]] = DEDUP_KEYS,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if max_age_ms < 0:
            raise ValueError("max_age_ms must be >= 0")
        self.max_rows = max_rows
        self.max_age_ms = max_age_ms
        self._keys = keys
        self._reset()

    def _reset(self) -> None:
        # A dict per table keeps insertion order and replaces a duplicate key in place.
        self._rows: dict[str, dict[Hashable, tuple[Row, Any]]] = {}
        self._unkeyed: dict[str, list[tuple[Row, Any]]] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._size = 0
        self._added = 0
        self._first_ms: int | None = None

    def __len__(self) -> int:
        return self._size

    def add(
        self,
        table: str,
        row: Row,
        *,
        now_ms: int,
        source: tuple[str, int, int] | None = None,
        origin: Any = None,
    ) -> None:
        """Add a row; ``source`` = (topic, partition, offset) of the message it came from,
        ``origin`` = that message (kept with the row until the batch is drained)."""
        key_of = self._keys.get(table)
        if key_of is None:
            self._unkeyed.setdefault(table, []).append((row, origin))
            self._size += 1
        else:
            table_rows = self._rows.setdefault(table, {})
            key = key_of(row)
            if key not in table_rows:
                self._size += 1
            table_rows[key] = (row, origin)
        self._added += 1
        if self._first_ms is None:
            self._first_ms = now_ms
        if source is not None:
            self.mark(source, now_ms=now_ms)

    def mark(self, source: tuple[str, int, int], *, now_ms: int) -> None:
        """Record a consumed message that produced no row (so its offset is committed too)."""
        topic, partition, offset = source
        tp = (topic, partition)
        if offset > self._offsets.get(tp, -1):
            self._offsets[tp] = offset
        if self._first_ms is None:
            self._first_ms = now_ms

    def due(self, now_ms: int) -> bool:
        """True when the batch should be written now (full, or its oldest entry is old)."""
        if self._size >= self.max_rows:
            return True
        return self._first_ms is not None and now_ms - self._first_ms >= self.max_age_ms

    def ms_until_due(self, now_ms: int) -> int | None:
        """How long a caller may wait before the batch is due by age (None: buffer empty)."""
        if self._first_ms is None:
            return None
        if self._size >= self.max_rows:
            return 0
        return max(0, self._first_ms + self.max_age_ms - now_ms)

    def drain(self) -> Batch:
        """Hand over everything held and empty the buffer."""
        rows: dict[str, list[Row]] = {}
        origins: dict[str, list[Any]] = {}
        for table, held in self._rows.items():
            if held:
                pairs = list(held.values())
                rows[table] = [row for row, _ in pairs]
                origins[table] = [origin for _, origin in pairs]
        for table, unkeyed in self._unkeyed.items():
            rows.setdefault(table, []).extend(row for row, _ in unkeyed)
            origins.setdefault(table, []).extend(origin for _, origin in unkeyed)
        batch = Batch(rows=rows, origins=origins, offsets=dict(self._offsets),
                      added=self._added)
        self._reset()
        return batch
