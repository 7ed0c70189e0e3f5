"""The sink's ClickHouseWriter on modern ClickHouse (chDB, in-process; issue 13).

On servers from 19.x on, an insert block that touches more than 100 partitions fails with code
252 ("Too many partitions for single INSERT block"), which the old writer took for TOO_MANY_PARTS
and retried forever. Here the real writer runs against chDB through a small client that speaks
clickhouse-driver's ``execute(sql, columns, columnar=True)``. The same batches go to the 18.16
server in tests/integration/test_clickhouse_sink.py.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.unit.test_migrations_chdb import _in_chdb

CLIENT = """
import re
import orjson
from clickhouse_driver import errors as ch_errors
from sinks.clickhouse import ClickHouseWriter
from sinks.retry import RetryPolicy
from sinks.rows import TABLE_COLUMNS

execute("CREATE DATABASE cx")
apply_migrations(execute, server_version=VERSION, database="cx")


def text(value):
    # A String column's value given as UTF-8 bytes (clickhouse-driver writes them as they are)
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(type(value).__name__)


class ChdbClient:
    '''clickhouse-driver's execute() on chDB: columnar inserts become JSONEachRow inserts,
    chDB's errors become ServerException with the server's code.'''

    def __init__(self):
        self.inserts = []

    def execute(self, sql, columns=(), columnar=False):
        try:
            if not columns:
                return execute(sql)
            table = sql.split()[2].split(".")[1]
            names = TABLE_COLUMNS[table]
            body = "\\n".join(orjson.dumps(dict(zip(names, row)), default=text).decode()
                              for row in zip(*columns))
            execute(sql.split("(")[0] + "FORMAT JSONEachRow\\n" + body)
            self.inserts.append(len(columns[0]))
            return []
        except ch_errors.Error:
            raise
        except Exception as exc:
            found = re.search(r"Code: (\\d+)", str(exc))
            raise ch_errors.ServerException(str(exc), code=int(found.group(1)) if found else 0)

    def disconnect(self):
        pass


def writer(client):
    # Bounded, so that an error retried by mistake ends the test instead of hanging it.
    return ClickHouseWriter(client, database="cx",
                            retry=RetryPolicy(attempts=3, initial_delay_s=0.01, max_delay_s=0.01))
"""


def test_120_months_in_one_batch_are_written_on_modern_clickhouse() -> None:
    out = _in_chdb(CLIENT + textwrap.dedent("""
        from datetime import datetime, timezone
        from schemas.events import touchpoint_adapter
        from sinks.rows import TOUCHPOINT_EVENTS, event_row

        now = datetime.now(timezone.utc)
        rows = []
        for n in range(120):
            event = touchpoint_adapter.validate_python({
                "event_id": f"e{n}", "schema_version": 1, "customer_id": "c1", "channel": "web",
                "occurred_at": datetime(2015 + n // 12, n % 12 + 1, 3, tzinfo=timezone.utc),
                "event_type": "page_view", "properties": {"url": "/"}})
            rows.append(event_row(event, None, ingested_at=now))
        one_block = ChdbClient()
        try:
            one_block.execute("INSERT INTO cx.touchpoint_events (x) VALUES", list(zip(*rows)))
            premise = "inserted"
        except Exception as exc:
            premise = [exc.code, str(exc)[:200]]
        client = ChdbClient()
        stats = writer(client).write({TOUCHPOINT_EVENTS: rows})
        count = execute("SELECT count(), uniqExact(toYYYYMM(occurred_at)) "
                        "FROM cx.touchpoint_events")
        print(json.dumps({"premise": premise, "inserts": client.inserts, "count": count,
                          "rejected": len(stats.rejected)}))
        """))
    # The premise of the issue: one block of 120 months is refused by modern ClickHouse, with
    # the code the old writer retried forever.
    assert out["premise"][0] == 252 and "partitions" in out["premise"][1].lower()
    assert out["inserts"] == [100, 20] and out["rejected"] == 0
    assert [int(v) for v in out["count"][0]] == [120, 120]


def test_boundary_values_of_the_contract_insert_on_modern_clickhouse() -> None:
    out = _in_chdb(CLIENT + textwrap.dedent("""
        from datetime import datetime, timezone
        from schemas.events import FLOAT32_MAX, INT32_MAX, INT64_MAX, touchpoint_adapter
        from sinks.rows import TOUCHPOINT_EVENTS, event_row

        now = datetime.now(timezone.utc)
        base = {"schema_version": 1, "customer_id": "c1", "channel": "web", "occurred_at": now}
        events = [
            {**base, "event_id": "p", "event_type": "page_view",
             "properties": {"url": "/", "load_time_ms": INT32_MAX, "http_status": 599}},
            {**base, "event_id": "s", "event_type": "support_contact",
             "properties": {"contact_id": "t", "reason": "r", "resolved": True,
                            "wait_s": FLOAT32_MAX}},
            {**base, "event_id": "c", "event_type": "cart_abandon",
             "properties": {"cart_id": "c", "cart_value": 1.7e308, "currency": "EUR",
                            "items": INT64_MAX}},
        ]
        rows = [event_row(touchpoint_adapter.validate_python(e), None, ingested_at=now)
                for e in events]
        client = ChdbClient()
        stats = writer(client).write({TOUCHPOINT_EVENTS: rows})
        back = execute("SELECT event_id, load_time_ms, wait_s, cart_value, "
                       "JSONExtractInt(properties, 'items') FROM cx.touchpoint_events "
                       "ORDER BY event_id")
        print(json.dumps({"rejected": [r.message for r in stats.rejected], "back": back}))
        """))
    assert out["rejected"] == []
    back = {row[0]: row[1:] for row in out["back"]}
    assert int(back["p"][0]) == 2**31 - 1
    assert float(back["s"][1]) == pytest.approx(3.4028234663852886e38, rel=1e-7)  # Float32 text
    assert int(back["c"][3]) == 2**63 - 1
