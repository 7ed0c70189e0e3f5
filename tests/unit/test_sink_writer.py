"""ClickHouseWriter against a scripted client: permanent errors are bisected to the failing rows,
retriable ones are retried, nothing halts (issue 13). The same paths run against the real 18.16
server in tests/integration/test_clickhouse_sink.py and against chDB in
tests/unit/test_sink_chdb.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from clickhouse_driver import errors as ch_errors

from schemas.alerts import Alert, AlertKind
from schemas.records import decode_alert
from sinks import rows as R
from sinks.clickhouse import ClickHouseWriter
from sinks.retry import RetryPolicy

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
RULE = R.TABLE_COLUMNS[R.ALERTS].index("rule")


def _alert(n: int, rule: str = "r", at: datetime = NOW) -> tuple[Any, ...]:
    alert = decode_alert(Alert(
        alert_id=f"a{n}", rule=rule, kind=AlertKind.support, customer_id="c", event_time=at,
        emitted_at=at, experience_score=50, churn_risk=0.5, action="x",
    ).to_json())
    return R.alert_row(alert, ingested_at=NOW)


class ScriptedClient:
    """Fails an insert holding a row whose rule is ``poison`` (permanently), fails the first
    ``transient`` calls with a lost connection, and records what it was sent."""

    def __init__(self, transient: int = 0, error: Exception | None = None) -> None:
        self.transient = transient
        self.error = error or ch_errors.TypeMismatchError("Column load_time_ms: 'i' format")
        self.inserts: list[list[Any]] = []
        self.calls = 0

    def execute(self, sql: str, columns: Sequence[Sequence[Any]] = (), columnar: bool = False
                ) -> list[Any]:
        self.calls += 1
        if self.transient:
            self.transient -= 1
            raise ch_errors.NetworkError("Code: 210. Connection refused")
        if not columns:
            return [(1,)]
        if "poison" in columns[RULE]:
            raise self.error
        self.inserts.append(list(zip(*columns, strict=True)))
        return []

    def disconnect(self) -> None:
        pass


def _writer(client: ScriptedClient) -> ClickHouseWriter:
    return ClickHouseWriter(client, database="cx",
                            retry=RetryPolicy(initial_delay_s=0.0, max_delay_s=0.0))


@pytest.mark.parametrize("poisoned", [[0], [999], [3, 4, 500], list(range(0, 1000, 97))])
def test_permanent_errors_are_bisected_to_the_failing_rows_and_the_rest_is_written(
    poisoned: list[int],
) -> None:
    rows = [_alert(n, "poison" if n in poisoned else "r") for n in range(1000)]
    client = ScriptedClient()
    stats = _writer(client).write({R.ALERTS: rows})
    assert sorted(r.index for r in stats.rejected) == poisoned
    assert {r.code for r in stats.rejected} == {53}
    assert all("TypeMismatchError" in r.message for r in stats.rejected)
    written = [row for insert in client.inserts for row in insert]
    assert sorted(written) == sorted(r for n, r in enumerate(rows) if n not in poisoned)
    assert stats.rows[R.ALERTS] == 1000 - len(poisoned)
    # about 2 * log2(1000) inserts per poisoned row, not one per row
    assert client.calls <= 1 + len(poisoned) * 2 * 10


def test_retriable_errors_are_retried_never_blamed_on_a_row() -> None:
    rows = [_alert(n) for n in range(10)]
    client = ScriptedClient(transient=5)
    stats = _writer(client).write({R.ALERTS: rows})
    assert stats.rejected == [] and stats.retries == 5 and stats.rows[R.ALERTS] == 10


def test_an_unknown_table_is_retried_not_dead_lettered() -> None:
    class Missing(ScriptedClient):
        def execute(self, sql: str, columns: Sequence[Sequence[Any]] = (),
                    columnar: bool = False) -> list[Any]:
            self.calls += 1
            if self.calls <= 3:
                raise ch_errors.ServerException("Table cx.alerts doesn't exist", code=60)
            return super().execute(sql, columns, columnar)

    client = Missing()
    stats = _writer(client).write({R.ALERTS: [_alert(1)]})
    assert stats.rejected == [] and stats.retries == 3 and len(client.inserts) == 1


def test_values_a_column_cannot_hold_are_rejected_before_the_insert() -> None:
    before_1970 = _alert(1, at=datetime(1960, 1, 1, tzinfo=timezone.utc))
    after_2106 = _alert(2, at=datetime(2200, 1, 1, tzinfo=timezone.utc))
    client = ScriptedClient()
    stats = _writer(client).write({R.ALERTS: [_alert(0), before_1970, _alert(3), after_2106]})
    assert [(r.index, r.code) for r in stats.rejected] == [(1, 321), (3, 321)]
    assert "event_time" in stats.rejected[0].message
    assert client.calls == 1 and len(client.inserts[0]) == 2


def test_a_batch_of_120_months_is_inserted_in_blocks_of_at_most_100_months() -> None:
    start = datetime(2016, 1, 15, tzinfo=timezone.utc)
    rows = [_alert(n, at=start + timedelta(days=31 * n)) for n in range(120)]
    client = ScriptedClient()
    stats = _writer(client).write({R.ALERTS: rows})
    assert stats.rejected == [] and [len(i) for i in client.inserts] == [100, 20]


def test_too_many_partitions_is_bisected_when_it_still_happens() -> None:
    """A server with a lower max_partitions_per_insert_block: halves until the blocks fit."""

    class Strict(ScriptedClient):
        def execute(self, sql: str, columns: Sequence[Sequence[Any]] = (),
                    columnar: bool = False) -> list[Any]:
            months = {datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m")
                      for t in columns[R.TABLE_COLUMNS[R.ALERTS].index("event_time")]}
            if len(months) > 10:
                self.calls += 1
                raise ch_errors.ServerException(
                    "Too many partitions for single INSERT block (more than 10).", code=252)
            return super().execute(sql, columns, columnar)

    start = datetime(2016, 1, 15, tzinfo=timezone.utc)
    rows = [_alert(n, at=start + timedelta(days=31 * n)) for n in range(40)]
    client = Strict()
    stats = _writer(client).write({R.ALERTS: rows})
    assert stats.rejected == [] and sum(len(i) for i in client.inserts) == 40


def test_a_row_of_the_wrong_width_is_isolated_not_a_stuck_batch() -> None:
    rows = [_alert(n) for n in range(8)]
    rows[5] = rows[5][:-1]
    client = ScriptedClient()
    stats = _writer(client).write({R.ALERTS: rows})
    assert [r.index for r in stats.rejected] == [5] and stats.rows[R.ALERTS] == 7
