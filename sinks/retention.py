"""Retention in ClickHouse: nothing older than ``CX_RETENTION_DAYS`` is kept.

Two mechanisms, by server version:

* **Expired monthly partitions are dropped** (every server, 18.16 included): every table is
  partitioned by ``toYYYYMM(<its time column>)``; a partition whose whole month ended more
  than the retention ago is removed with ``ALTER TABLE ... DROP PARTITION ID``, which is
  immediate and cheap (files are unlinked, no rewrite). Rows are therefore kept between the
  retention and the retention plus one month.
* **Table TTL** (servers that have ``MODIFY TTL``, 20.3 and later as in migration 0006): each
  table gets ``TTL <time column> + INTERVAL <days> DAY``, so merges remove expired rows on their
  own, row by row. ``dead_letters`` keeps the shorter of its 30-day TTL and the retention.

``erase_audit`` and ``schema_migrations`` hold no personal data and are kept.

Failure behaviour: a failing statement raises (clickhouse_driver's error); what was dropped
before stays dropped, and running again continues (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sinks.erase import quote

Execute = Callable[[str], Any]
Progress = Callable[[str], None]

# Table -> the time column of its monthly partition key.
RETAINED_TABLES: dict[str, str] = {
    "touchpoint_events": "occurred_at",
    "customer_scores": "updated_at",
    "alerts": "event_time",
    "dead_letters": "received_at",
    "touchpoint_rollup_hourly": "hour",
}
TTL_MIN_SERVER_VERSION = (20, 3)
DEAD_LETTER_TTL_DAYS = 30  # migration 0006


def month_end(partition: str) -> datetime:
    """The first instant after the month of a ``toYYYYMM`` partition (``'202401'``)."""
    year, month = int(partition[:4]), int(partition[4:6])
    if not (1 <= month <= 12) or len(partition) != 6:
        raise ValueError(f"not a toYYYYMM partition: {partition!r}")
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)


def is_expired(partition: str, *, now: datetime, retention_days: int) -> bool:
    """Whether every row a ``toYYYYMM`` partition can hold is older than the retention."""
    return month_end(partition) <= now - timedelta(days=retention_days)


def ttl_statements(database: str, retention_days: int) -> list[str]:
    """``MODIFY TTL`` per table for servers that support it."""
    statements = []
    for table, column in RETAINED_TABLES.items():
        days = min(retention_days, DEAD_LETTER_TTL_DAYS) if table == "dead_letters" \
            else retention_days
        statements.append(f"ALTER TABLE {database}.{table} MODIFY TTL {column} + "
                          f"INTERVAL {days} DAY")
    return statements


@dataclass(frozen=True)
class PartitionDrop:
    table: str
    partition_id: str
    rows: int


@dataclass
class RetentionRun:
    drops: list[PartitionDrop] = field(default_factory=list)
    ttl: list[str] = field(default_factory=list)
    dry_run: bool = False


class Retention:
    def __init__(self, execute: Execute, database: str, server_version: tuple[int, ...], *,
                 progress: Progress | None = None) -> None:
        self.execute = execute
        self.database = database
        self.server_version = server_version
        self.progress = progress or (lambda _line: None)

    @property
    def supports_ttl(self) -> bool:
        return self.server_version >= TTL_MIN_SERVER_VERSION

    def expired_partitions(self, retention_days: int, now: datetime) -> list[PartitionDrop]:
        """The active partitions of the retained tables that lie wholly beyond retention."""
        tables = ", ".join(quote(t) for t in RETAINED_TABLES)
        rows = self.execute(
            "SELECT table, partition_id, sum(rows) FROM system.parts "
            f"WHERE database = {quote(self.database)} AND table IN ({tables}) AND active "
            "GROUP BY table, partition_id ORDER BY table, partition_id")
        return [PartitionDrop(str(table), str(pid), int(n)) for table, pid, n in rows or ()
                if is_expired(str(pid), now=now, retention_days=retention_days)]

    def apply(self, retention_days: int, *, now: datetime | None = None,
              dry_run: bool = False) -> RetentionRun:
        now = now or datetime.now(timezone.utc)
        run = RetentionRun(dry_run=dry_run)
        drops = self.expired_partitions(retention_days, now)
        verb = "would drop" if dry_run else "dropping"
        for i, drop in enumerate(drops, 1):
            self.progress(f"[{i}/{len(drops)}] {verb} {drop.table} partition "
                          f"{drop.partition_id} ({drop.rows} rows)")
            if not dry_run:
                self.execute(f"ALTER TABLE {self.database}.{drop.table} DROP PARTITION ID "
                             f"{quote(drop.partition_id)}")
            run.drops.append(drop)
        if not drops:
            self.progress(f"no partition older than {retention_days} days")
        if self.supports_ttl:
            for statement in ttl_statements(self.database, retention_days):
                self.progress(("would run: " if dry_run else "") + statement)
                if not dry_run:
                    self.execute(statement)
                run.ttl.append(statement)
        else:
            self.progress("table TTL: not supported by ClickHouse "
                          f"{'.'.join(map(str, self.server_version))} (needs 20.3): expired "
                          "partitions are dropped instead")
        return run
