"""Every migration on modern ClickHouse (chDB, in-process), in a subprocess per test.

chDB allows one database path per process, so each test runs its scenario in a fresh Python
process (``_in_chdb``) and gets JSON back. The same scenarios run on the 18.16 server in
tests/integration/test_clickhouse_sink.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sinks.migrations import MigrationError, load_migrations, parse_version, split_statements
from sinks.rows import TABLE_COLUMNS

REPO = Path(__file__).resolve().parents[2]

PRELUDE = textwrap.dedent(
    """
    import json, sys, tempfile
    from chdb import session
    from sinks.migrations import apply_migrations, load_migrations, parse_version

    sess = session.Session(tempfile.mkdtemp(prefix="cx-chdb-"))

    def execute(sql):
        text = sess.query(sql, "JSONCompact").bytes()
        return [tuple(r) for r in json.loads(text)["data"]] if text.strip() else []

    def execute_params(sql, params):
        return execute(sql % dict(params))

    VERSION = parse_version(execute("SELECT version()")[0][0])

    def schema(db):
        return execute(
            "SELECT name, engine, create_table_query FROM system.tables "
            f"WHERE database = '{db}' ORDER BY name"
        )
    """
)


def _in_chdb(body: str) -> Any:
    """Run ``body`` after PRELUDE in a new interpreter; it must print one JSON document."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_migration_applies_and_twice_changes_nothing() -> None:
    out = _in_chdb(
        """
        execute("CREATE DATABASE cx")
        first = apply_migrations(execute, server_version=VERSION, database="cx")
        before = schema("cx")
        second = apply_migrations(execute, server_version=VERSION, database="cx")
        recorded = execute("SELECT count(), uniqExact(name) FROM cx.schema_migrations")
        columns = {}
        for table, name, kind in execute(
            "SELECT table, name, default_kind FROM system.columns WHERE database = 'cx' "
            "ORDER BY table, position"
        ):
            if kind != "MATERIALIZED":
                columns.setdefault(table, []).append(name)
        print(json.dumps({"version": list(VERSION), "first": first, "second": second,
                          "same": before == schema("cx"), "recorded": recorded,
                          "tables": {n: e for n, e, _ in before}, "columns": columns,
                          "ddl": {n: q for n, _, q in before}}))
        """
    )
    all_names = [m.name for m in load_migrations()]
    assert out["first"] == all_names  # chDB is new enough for every modern-only migration
    assert out["second"] == []
    assert out["same"] is True
    assert [int(v) for v in out["recorded"][0]] == [len(all_names), len(all_names)]
    assert out["tables"]["touchpoint_events"] == "ReplacingMergeTree"
    assert out["tables"]["alerts"] == "ReplacingMergeTree"
    assert out["tables"]["touchpoint_rollup_hourly"] == "SummingMergeTree"
    assert out["tables"]["touchpoint_rollup_hourly_mv"] == "MaterializedView"
    for table, columns in TABLE_COLUMNS.items():
        assert out["columns"][table] == list(columns), table
    # The modern-only migrations took effect.
    assert "TTL" in out["ddl"]["dead_letters"]
    events_ddl = out["ddl"]["touchpoint_events"].replace("`", "")
    assert "occurred_at64 DateTime64(3, 'UTC') MATERIALIZED" in events_ddl
    assert "properties String TTL" in events_ddl


def test_old_server_skips_modern_migrations_and_an_upgrade_applies_them() -> None:
    out = _in_chdb(
        """
        execute("CREATE DATABASE cx")
        old = apply_migrations(execute, server_version=(18, 16, 1), database="cx")
        no_ttl = "TTL" not in schema("cx")[2][2]
        upgraded = apply_migrations(execute, server_version=VERSION, database="cx")
        print(json.dumps({"old": old, "upgraded": upgraded, "no_ttl_before": no_ttl}))
        """
    )
    modern = [m.name for m in load_migrations() if m.min_server_version is not None]
    assert modern, "expected modern-only migrations (TTL, DateTime64)"
    assert not set(modern) & set(out["old"])
    assert out["upgraded"] == modern
    assert out["no_ttl_before"] is True


def test_a_changed_migration_is_refused() -> None:
    out = _in_chdb(
        """
        from dataclasses import replace
        from sinks.migrations import MigrationError
        execute("CREATE DATABASE cx")
        migrations = load_migrations()
        apply_migrations(execute, server_version=VERSION, database="cx", migrations=migrations)
        edited = [replace(migrations[0], checksum="0" * 64), *migrations[1:]]
        try:
            apply_migrations(execute, server_version=VERSION, database="cx", migrations=edited)
            print(json.dumps({"raised": None}))
        except MigrationError as exc:
            print(json.dumps({"raised": str(exc)}))
        """
    )
    assert out["raised"] and "changed after it was applied" in out["raised"]


def test_rollup_and_report_queries_on_modern_clickhouse() -> None:
    out = _in_chdb(
        """
        from datetime import datetime, timedelta, timezone
        import orjson
        from schemas.events import touchpoint_adapter
        from sinks.rows import TOUCHPOINT_EVENTS, as_dict, event_row
        from sinks.queries import collect_report

        execute("CREATE DATABASE cx")
        apply_migrations(execute, server_version=VERSION, database="cx")
        now = datetime.now(timezone.utc)
        answers = [("nps", s) for s in (10, 9, 8, 3, 0)] + [("csat", s) for s in (5, 4, 2)]
        answers += [("ces", s) for s in (7, 5, 1, 1)]
        lines = []
        for i, (survey, score) in enumerate(answers):
            event = touchpoint_adapter.validate_python({
                "event_id": f"s{i}", "schema_version": 1,
                "occurred_at": (now - timedelta(minutes=i)).isoformat(),
                "customer_id": f"c{i % 3}", "channel": ["web", "app"][i % 2],
                "event_type": "survey_answer",
                "properties": {"survey": survey, "score": score}})
            lines.append(as_dict(TOUCHPOINT_EVENTS, event_row(event, 0.5, ingested_at=now)))
        body = "\\n".join(orjson.dumps(line, default=bytes.decode).decode() for line in lines)
        execute("INSERT INTO cx.touchpoint_events FORMAT JSONEachRow\\n" + body)
        execute("INSERT INTO cx.touchpoint_events FORMAT JSONEachRow\\n" + body)  # redelivery
        window = dict(database="cx", since_s=int(now.timestamp()) - 86400,
                      until_s=int(now.timestamp()) + 60, by="channel")
        raw = collect_report(execute_params, source="raw", **window)
        rollup = collect_report(execute_params, source="rollup", **window)
        dedup = execute("SELECT count(), uniqExact(event_id) FROM cx.touchpoint_events FINAL")
        print(json.dumps({"raw": raw["overall"], "rollup": rollup["overall"],
                          "cuts": [c["cut"] for c in raw["cuts"]], "dedup": dedup}))
        """
    )
    raw = out["raw"]
    # NPS over (10, 9, 8, 3, 0): 2 promoters, 2 detractors of 5 -> 0.
    assert raw["nps"] == pytest.approx(0.0) and raw["nps_responses"] == 5
    assert raw["csat_mean"] == pytest.approx(11 / 3)
    assert raw["csat_pct_4_5"] == pytest.approx(200 / 3)
    assert raw["ces_mean"] == pytest.approx(14 / 4) and raw["ces_pct_5_7"] == pytest.approx(50)
    assert raw["events"] == 12  # FINAL: the redelivered copy is not counted
    assert [int(v) for v in out["dedup"][0]] == [12, 12]
    # The rollup saw both inserts: documented, the report reads raw rows by default.
    assert out["rollup"]["events"] == 24
    assert out["rollup"]["nps"] == pytest.approx(raw["nps"])
    assert out["cuts"] == ["app", "web"]


def test_clv_column_reads_unknown_on_old_rows_and_stores_the_updates_value() -> None:
    """0011 adds customer_scores.clv_12m to a table that already holds rows: those read -1
    (unknown, the column default), a row from the sink's builder stores its clv_12m."""
    out = _in_chdb(
        """
        from datetime import datetime, timezone
        import orjson
        from schemas.events import JourneyStage
        from schemas.scores import ScoreUpdate
        from sinks.rows import CUSTOMER_SCORES, as_dict, score_row

        execute("CREATE DATABASE cx")
        everything = load_migrations()
        before = [m for m in everything if m.name < "0011"]
        apply_migrations(execute, server_version=VERSION, database="cx", migrations=before)
        execute("INSERT INTO cx.customer_scores (customer_id, updated_ms) VALUES ('old', 1)")
        added = apply_migrations(execute, server_version=VERSION, database="cx")
        again = apply_migrations(execute, server_version=VERSION, database="cx")
        now = datetime(2026, 1, 2, tzinfo=timezone.utc)
        lines = []
        for customer, clv in (("valued", 412.5), ("unknown", None)):
            update = ScoreUpdate(customer_id=customer, experience_score=50, churn_risk=0.4,
                                 journey_stage=JourneyStage.usage, event_time=now,
                                 updated_at=now, clv_12m=clv)
            row = score_row(update, ingested_at=now)
            lines.append(orjson.dumps(as_dict(CUSTOMER_SCORES, row), default=bytes.decode))
        execute("INSERT INTO cx.customer_scores FORMAT JSONEachRow\\n"
                + "\\n".join(line.decode() for line in lines))
        stored = execute("SELECT customer_id, clv_12m FROM cx.customer_scores ORDER BY customer_id")
        kind = execute("SELECT type, default_expression FROM system.columns WHERE database = 'cx' "
                       "AND table = 'customer_scores' AND name = 'clv_12m'")
        print(json.dumps({"added": added, "again": again, "stored": stored, "kind": kind}))
        """
    )
    assert out["added"][0] == "0011_customer_scores_clv"
    assert out["again"] == []
    assert {c: float(v) for c, v in out["stored"]} == {"old": -1.0, "unknown": -1.0,
                                                       "valued": 412.5}
    assert out["kind"] == [["Float64", "-1"]]


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = "-- a; comment\nSELECT ';' AS x; -- tail\nSELECT 'it''s;' , \"a;b\";\n\n;"
    assert split_statements(sql) == ["SELECT ';' AS x", "SELECT 'it''s;' , \"a;b\""]


def test_migration_files_are_well_formed() -> None:
    migrations = load_migrations()
    numbers = [m.name[:4] for m in migrations]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    for migration in migrations:
        for statement in migration.statements:
            assert "{db}." in statement, f"{migration.name}: qualify tables with {{db}}"


def test_parse_version() -> None:
    assert parse_version("18.16.1") == (18, 16, 1)
    assert parse_version("26.9.2.1") == (26, 9, 2, 1)
    assert parse_version("23.8.1.2992-lts") == (23, 8, 1, 2992)
    with pytest.raises(ValueError):
        parse_version("unknown")


def test_bad_database_name_is_refused() -> None:
    from sinks.migrations import apply_migrations

    with pytest.raises(MigrationError):
        apply_migrations(lambda sql: [], server_version=(18, 16), database="cx; DROP TABLE x")


def test_migrations_ship_inside_the_sinks_package() -> None:
    """An installed wheel has them: they live in the package and pyproject ships *.sql."""
    from pathlib import Path

    import sinks
    from sinks.migrations import MIGRATIONS_DIR, load_migrations

    package_dir = Path(sinks.__file__).resolve().parent
    assert MIGRATIONS_DIR.resolve().parent == package_dir
    names = [m.name for m in load_migrations()]
    assert names and names == sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    pyproject = (package_dir.parent / "pyproject.toml").read_text()
    assert 'sinks = ["sql/*.sql"]' in pyproject
