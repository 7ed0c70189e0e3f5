"""Erasing one person's rows from ClickHouse: every table that holds their ids, mutations
awaited, the hourly rollup recomputed for the hours their events touched.

Which rows belong to the person (``ids``: a customer id and the anonymous ids linked to it):

* ``touchpoint_events``: ``customer_id`` or ``anonymous_id`` among the ids;
* ``customer_scores`` and ``alerts``: ``customer_id`` among the ids (a visitor never linked is
  scored under its anonymous id);
* ``dead_letters``: the raw rejected message contains one of the ids as a JSON string
  (``"<id>"``); a raw message stored gzip-compressed (too large) cannot be searched;
* ``touchpoint_rollup_hourly`` holds no ids, but its sums counted the person's events: the
  hours they touched are deleted and recomputed from ``touchpoint_events FINAL`` with the
  materialized view's own SELECT (read from its migration, so the two never diverge).

Deletions are ``ALTER TABLE ... DELETE`` mutations (ClickHouse 18.16 and later); each is
awaited by polling ``system.mutations`` until no mutation of the table is pending. Tables with
no matching row get no mutation, so erasing twice costs two counts per table.

Failure behaviour: :class:`EraseError` when a mutation is not done within ``timeout_s`` (it
keeps running on the server; running the erase again is safe) or a table is missing (run
``cxsignals migrate``). Not atomic: rows inserted while the erase runs (a sink behind on the
topics) may escape it, which is why ``cxsignals erase`` waits for the sink first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sinks.migrations import load_migrations

Execute = Callable[[str], Any]
Progress = Callable[[str], None]

ROLLUP_TABLE = "touchpoint_rollup_hourly"
ROLLUP_VIEW_MIGRATION = "0005_touchpoint_rollup_hourly"
# Tables erased row by row, in this order (the rollup comes after touchpoint_events).
ERASED_TABLES = ("touchpoint_events", "customer_scores", "alerts", "dead_letters")


class EraseError(RuntimeError):
    """A mutation did not finish in time (:class:`MutationTimeout`), or the schema is not
    there."""


class MutationTimeout(EraseError):
    """Mutations still pending after ``timeout_s``: they keep running on the server."""


def quote(value: str) -> str:
    """A ClickHouse string literal of ``value`` (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in_list(ids: Iterable[str]) -> str:
    return "(" + ", ".join(quote(i) for i in sorted(ids)) + ")"


def predicates(ids: Iterable[str]) -> dict[str, str]:
    """The WHERE clause selecting the person's rows, per table."""
    wanted = sorted(set(ids))
    if not wanted:
        raise ValueError("no id to erase")
    listed = _in_list(wanted)
    raw = " OR ".join(f"position(raw, {quote(orjson.dumps(i).decode())}) > 0" for i in wanted)
    return {
        "touchpoint_events": f"customer_id IN {listed} OR anonymous_id IN {listed}",
        "customer_scores": f"customer_id IN {listed}",
        "alerts": f"customer_id IN {listed}",
        "dead_letters": raw,
    }


def rollup_select(database: str, hours_s: Sequence[int]) -> str:
    """The rollup's rows for ``hours_s`` (epoch seconds of hour starts), recomputed exactly
    from ``touchpoint_events FINAL`` with the materialized view's SELECT."""
    migration = next(m for m in load_migrations() if m.name == ROLLUP_VIEW_MIGRATION)
    view = next(s for s in migration.statements if "MATERIALIZED VIEW" in s)
    select = view[view.index("AS SELECT") + len("AS "):].replace("{db}", database)
    source = f"FROM {database}.touchpoint_events"
    hours = ", ".join(str(int(h)) for h in sorted(hours_s))
    narrowed, found = re.subn(
        re.escape(source) + r"\s+GROUP BY",
        f"{source} FINAL WHERE toUInt32(toStartOfHour(occurred_at)) IN ({hours}) GROUP BY",
        select)
    if found != 1:
        raise EraseError(f"cannot find the rollup's source in {ROLLUP_VIEW_MIGRATION}")
    return narrowed


@dataclass
class ErasedRows:
    """Rows removed per table, and the rollup hours recomputed."""

    rows: dict[str, int] = field(default_factory=dict)
    rollup_hours: int = 0


class ClickHouseEraser:
    """Erases ids from one database (``execute`` runs one statement, returns rows)."""

    def __init__(self, execute: Execute, database: str, *, progress: Progress | None = None,
                 timeout_s: float = 600.0, poll_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.execute = execute
        self.database = database
        self.progress = progress or (lambda _line: None)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.clock = clock
        self.sleep = sleep

    def _table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def check_schema(self) -> None:
        rows = self.execute(f"SELECT name FROM system.tables WHERE database = "
                            f"{quote(self.database)}")
        present = {str(r[0]) for r in rows or ()}
        missing = [t for t in (*ERASED_TABLES, ROLLUP_TABLE) if t not in present]
        if missing:
            raise EraseError(f"database {self.database} lacks {', '.join(missing)}: run "
                             "`cxsignals migrate` (or check CLICKHOUSE_URL)")

    def linked_anonymous_ids(self, customer_id: str) -> set[str]:
        """Anonymous ids that appeared with the customer id on a stored event."""
        rows = self.execute(
            f"SELECT DISTINCT anonymous_id FROM {self._table('touchpoint_events')} "
            f"WHERE customer_id = {quote(customer_id)} AND anonymous_id != ''")
        return {str(r[0]) for r in rows or ()}

    def erase(self, ids: Iterable[str]) -> ErasedRows:
        """Delete the rows of ``ids`` everywhere, await each mutation, recompute the rollup."""
        where = predicates(ids)
        result = ErasedRows()
        hours = [int(r[0]) for r in self.execute(
            f"SELECT DISTINCT toUInt32(toStartOfHour(occurred_at)) FROM "
            f"{self._table('touchpoint_events')} WHERE {where['touchpoint_events']}") or ()]
        for table in ERASED_TABLES:
            count = int(self.execute(
                f"SELECT count() FROM {self._table(table)} WHERE {where[table]}")[0][0])
            result.rows[table] = count
            if count:
                started = self.clock()
                self.execute(f"ALTER TABLE {self._table(table)} DELETE WHERE {where[table]}")
                self.wait_for_mutations(table)
                self.progress(f"{table}: {count} rows deleted "
                              f"({self.clock() - started:.1f} s)")
            else:
                self.progress(f"{table}: no rows")
        if hours:
            started = self.clock()
            listed = ", ".join(str(h) for h in sorted(hours))
            self.execute(f"ALTER TABLE {self._table(ROLLUP_TABLE)} DELETE WHERE "
                         f"toUInt32(hour) IN ({listed})")
            self.wait_for_mutations(ROLLUP_TABLE)
            self.execute(f"INSERT INTO {self._table(ROLLUP_TABLE)} "
                         f"{rollup_select(self.database, hours)}")
            self.progress(f"{ROLLUP_TABLE}: {len(hours)} hours recomputed "
                          f"({self.clock() - started:.1f} s)")
        result.rollup_hours = len(hours)
        return result

    def wait_for_mutations(self, table: str) -> None:
        """Return once no mutation of ``table`` is pending; MutationTimeout after
        ``timeout_s``."""
        deadline = self.clock() + self.timeout_s
        while True:
            pending = int(self.execute(
                f"SELECT count() FROM system.mutations WHERE database = {quote(self.database)} "
                f"AND table = {quote(table)} AND is_done = 0")[0][0])
            if not pending:
                return
            if self.clock() > deadline:
                raise MutationTimeout(f"{pending} mutations of {self.database}.{table} not done "
                                 f"after {self.timeout_s:.0f} s (they keep running; erase "
                                 "again to check)")
            self.sleep(self.poll_s)
