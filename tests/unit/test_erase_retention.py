"""The pure parts of erase and retention, and their SQL on modern ClickHouse (chDB)."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

import pytest

from cxsignals.erase_cmd import EXIT_USAGE
from cxsignals.erase_cmd import _run as erase_run
from cxsignals.retention_cmd import _run as retention_run
from cxsignals.settings import Settings
from cxsignals.topics_cmd import topic_specs
from sinks.erase import predicates, quote, rollup_select
from sinks.retention import is_expired, month_end, ttl_statements
from tests.unit.test_migrations_chdb import _in_chdb


def test_quote_escapes_what_would_end_the_literal() -> None:
    assert quote("c-1") == "'c-1'"
    assert quote("x' OR 1=1 --") == "'x\\' OR 1=1 --'"
    assert quote("back\\slash") == "'back\\\\slash'"


def test_predicates_cover_every_table_that_holds_ids() -> None:
    where = predicates(["c-1", "a-1"])
    assert where["touchpoint_events"] == ("customer_id IN ('a-1', 'c-1') OR anonymous_id IN "
                                          "('a-1', 'c-1')")
    assert where["customer_scores"] == where["alerts"] == "customer_id IN ('a-1', 'c-1')"
    # dead letters: the id as a JSON string anywhere in the raw message
    assert where["dead_letters"] == ("position(raw, '\"a-1\"') > 0 OR "
                                     "position(raw, '\"c-1\"') > 0")
    with pytest.raises(ValueError):
        predicates([])


def test_the_rollup_is_recomputed_with_the_views_own_select_for_the_hours_only() -> None:
    sql = rollup_select("cx", [7200, 3600])
    assert sql.startswith("SELECT")
    assert "FROM cx.touchpoint_events FINAL WHERE toUInt32(toStartOfHour(occurred_at)) IN " \
           "(3600, 7200) GROUP BY" in sql
    assert "countIf(event_type = 'purchase') AS purchases" in sql


def test_a_partition_expires_once_its_whole_month_is_older_than_the_retention() -> None:
    assert month_end("202312") == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert month_end("202402") == datetime(2024, 3, 1, tzinfo=timezone.utc)
    now = datetime(2024, 3, 31, tzinfo=timezone.utc)
    assert is_expired("202402", now=now, retention_days=30)  # ended Mar 1, cutoff Mar 1
    assert not is_expired("202402", now=now, retention_days=31)
    assert not is_expired("202403", now=now, retention_days=1)
    with pytest.raises(ValueError):
        month_end("all")


def test_ttl_keeps_the_shorter_dead_letter_ttl() -> None:
    statements = ttl_statements("cx", 400)
    assert "ALTER TABLE cx.touchpoint_events MODIFY TTL occurred_at + INTERVAL 400 DAY" \
        in statements
    assert "ALTER TABLE cx.dead_letters MODIFY TTL received_at + INTERVAL 30 DAY" in statements
    assert "ALTER TABLE cx.dead_letters MODIFY TTL received_at + INTERVAL 7 DAY" \
        in ttl_statements("cx", 7)


def test_topics_get_retention_ms_only_when_a_retention_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    keep = {s.name: s.config for s in topic_specs(Settings())}
    assert all("retention.ms" not in c for c in keep.values())
    assert keep["cx.scores"]["cleanup.policy"] == "compact"
    monkeypatch.setenv("CX_RETENTION_DAYS", "30")
    bounded = {s.name: s.config for s in topic_specs(Settings())}
    assert all(c["retention.ms"] == str(30 * 86_400_000) for c in bounded.values())
    assert bounded["cx.scores"]["cleanup.policy"] == "compact,delete"
    assert bounded["cx.touchpoints"]["message.timestamp.type"] == "LogAppendTime"


def test_commands_refuse_without_what_they_need(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(customer=None, anonymous_id=None)
    assert erase_run(args, Settings()) == EXIT_USAGE
    assert retention_run(argparse.Namespace(days=None), Settings()) == 1
    err = capsys.readouterr().err
    assert "--customer" in err and "CX_RETENTION_DAYS" in err


def test_erase_and_retention_sql_runs_on_modern_clickhouse() -> None:
    """The same statements as on 18.16 (tests/integration), on a modern server: mutations,
    the rollup recompute, the audit table, DROP PARTITION ID and table TTL."""
    out = _in_chdb(
        """
        from datetime import datetime, timezone
        from sinks.erase import ClickHouseEraser
        from sinks.retention import Retention
        execute("CREATE DATABASE cx")
        apply_migrations(execute, server_version=VERSION, database="cx")
        for n, (customer, anonymous, at) in enumerate([
                ("c-gone", "a-gone", 1700000000), ("c-kept", "a-kept", 1700000000),
                ("", "a-gone", 1700007200), ("c-kept", "", 1600000000)]):
            execute("INSERT INTO cx.touchpoint_events (event_id, occurred_at, customer_id, "
                    f"anonymous_id, event_type) SELECT 'e{n}', toDateTime({at}), "
                    f"'{customer}', '{anonymous}', 'page_view'")
        execute("INSERT INTO cx.alerts (alert_id, customer_id, event_time) "
                "SELECT 'x', 'c-gone', toDateTime(1700000000)")
        # (now: the dead letters' own 30-day TTL would drop an old row at once)
        execute("INSERT INTO cx.dead_letters (received_at, raw) "
                "SELECT now(), '{\\"customer_id\\": \\"c-gone\\"}'")
        eraser = ClickHouseEraser(execute, "cx")
        eraser.check_schema()
        ids = {"c-gone"} | eraser.linked_anonymous_ids("c-gone")
        erased = eraser.erase(ids)
        rollup = execute("SELECT toUInt32(hour), sum(events) FROM cx.touchpoint_rollup_hourly "
                         "GROUP BY hour ORDER BY hour")
        left = execute("SELECT event_id FROM cx.touchpoint_events ORDER BY event_id")
        run = Retention(execute, "cx", VERSION).apply(
            400, now=datetime(2024, 6, 1, tzinfo=timezone.utc))
        ddl = execute("SELECT create_table_query FROM system.tables WHERE database = 'cx' "
                      "AND name = 'alerts'")[0][0]
        partitions = execute("SELECT DISTINCT partition_id FROM system.parts WHERE "
                             "database = 'cx' AND table = 'touchpoint_events' AND active")
        print(json.dumps({"ids": sorted(ids), "rows": erased.rows, "hours": erased.rollup_hours,
                          "rollup": rollup, "left": left, "dropped": [
                              [d.table, d.partition_id] for d in run.drops],
                          "ddl": ddl, "partitions": partitions}))
        """
    )
    assert out["ids"] == ["a-gone", "c-gone"]
    assert out["rows"] == {"touchpoint_events": 2, "customer_scores": 0, "alerts": 1,
                           "dead_letters": 1}
    assert out["hours"] == 2
    # hour 1700000000 // 3600 keeps the other person's event; the later hour is empty now
    assert [list(map(int, r)) for r in out["rollup"]] == [[1600000000 // 3600 * 3600, 1],
                                                          [1700000000 // 3600 * 3600, 1]]
    assert [r[0] for r in out["left"]] == ["e1", "e3"]
    assert ["touchpoint_events", "202009"] in out["dropped"]  # 2020-09 < 2024-06 - 400 days
    assert out["partitions"] == [["202311"]]
    assert "TTL event_time + toIntervalDay(400)" in out["ddl"]


def test_the_audit_holds_counts_and_at_most_keyed_hashes_of_the_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cxsignals.erase_cmd import _audit_sql, _id_hmacs
    from schemas.erase import EraseRequest

    request = EraseRequest(request_id="r-1", subject="c-secret", kind="customer",
                           requested_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert _id_hmacs(Settings(), ["c-secret"]) == []  # no key: nothing of the id
    monkeypatch.setenv("CX_ERASE_AUDIT_KEY", "k")
    hmacs = _id_hmacs(Settings(), ["c-secret"])
    assert len(hmacs) == 1 and len(hmacs[0]) == 64
    sql = _audit_sql("cx", request, datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc), "dpo", 1,
                     hmacs, {"worker.states": 1, "clickhouse.alerts": 2})
    assert "c-secret" not in sql
    assert "['worker.states', 'clickhouse.alerts'] AS Array(String)" in sql
    assert "[1, 2] AS Array(UInt64)" in sql


def test_mutations_still_pending_after_the_timeout_are_a_timeout_not_an_outage() -> None:
    from cxsignals.erase_cmd import TimedOut, Unavailable, _clickhouse_errors
    from sinks.erase import ClickHouseEraser, EraseError, MutationTimeout

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    eraser = ClickHouseEraser(lambda _sql: [(2,)], "cx", timeout_s=5, poll_s=1,
                              clock=lambda: now[0], sleep=sleep)
    with pytest.raises(MutationTimeout, match="2 mutations of cx.alerts not done after 5 s"):
        eraser.wait_for_mutations("alerts")
    assert 5 < now[0] <= 7  # polled until the timeout, not longer
    settings = Settings()
    with pytest.raises(TimedOut), _clickhouse_errors(settings):
        eraser.wait_for_mutations("alerts")
    with pytest.raises(Unavailable, match="lacks"), _clickhouse_errors(settings):
        raise EraseError("database cx lacks alerts: run cxsignals migrate")
