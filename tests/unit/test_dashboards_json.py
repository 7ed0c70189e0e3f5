"""The Grafana dashboards are valid for current Grafana and consistent with the provisioning,
the metrics the workers export and the ClickHouse dialects the project supports.

The queries themselves run against real services in
tests/integration/test_dashboard_queries.py; here every ClickHouse panel query is also compiled
by an in-process modern ClickHouse (chdb) on the migrated schema.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from sinks import metrics as sink_metrics
from sinks.migrations import apply_migrations
from streams import loop_lag, metrics
from tests.dashboards import (
    CLICKHOUSE_TYPE,
    PROMETHEUS_TYPE,
    REPO,
    all_panels,
    clickhouse_sql,
    load_dashboards,
    panel_queries,
    prometheus_expr,
    provisioned_datasources,
    variable_query,
    variables_used,
)

DASHBOARDS = load_dashboards()
EXPECTED = {
    "cx-overview.json": ("CX overview", CLICKHOUSE_TYPE),
    "pipeline-operations.json": ("Pipeline operations", PROMETHEUS_TYPE),
}
RULES = REPO / "deploy" / "prometheus" / "rules" / "cxsignals.rules.yml"


def _queries() -> list[Any]:
    return [q for name, board in DASHBOARDS.items() for q in panel_queries(name, board)]


def _exported_sample_names() -> set[str]:
    """Series names the worker and the sink export, from the metric objects of
    streams/metrics.py and sinks/metrics.py."""
    names: set[str] = set()
    for value in [*vars(metrics).values(), *vars(sink_metrics).values(),
                  *vars(loop_lag).values()]:
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
            else:
                names.add(family.name)
    return names


def test_both_dashboards_exist_with_titles_and_unique_uids() -> None:
    assert set(DASHBOARDS) == set(EXPECTED)
    for name, (title, _) in EXPECTED.items():
        assert DASHBOARDS[name]["title"] == title
    uids = [board["uid"] for board in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) and all(uids)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_version_and_layout(name: str) -> None:
    board = DASHBOARDS[name]
    assert board["schemaVersion"] >= 39
    panels = list(all_panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        assert panel.get("title"), f"panel {panel['id']} of {name} has no title"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_queries_a_provisioned_datasource(name: str) -> None:
    provisioned = provisioned_datasources()
    _, expected_type = EXPECTED[name]
    for panel in all_panels(DASHBOARDS[name]):
        if panel["type"] == "row":
            assert not panel.get("targets")
            continue
        source = panel["datasource"]
        assert provisioned.get(source["uid"]) == source["type"] == expected_type, panel["title"]
        targets = panel["targets"]
        assert targets, f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["datasource"] == source, panel["title"]
            text = target.get("rawSql") if expected_type == CLICKHOUSE_TYPE else target.get("expr")
            assert text and text.strip(), f"empty query in {panel['title']!r}"


def test_provisioning_declares_the_two_datasources_as_required() -> None:
    doc = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/datasources.yml").read_text()
    )
    by_uid = {ds["uid"]: ds for ds in doc["datasources"]}
    assert by_uid["cx-prometheus"]["url"] == "http://prometheus:9090"
    clickhouse = by_uid["cx-clickhouse"]["jsonData"]
    assert (clickhouse["host"], clickhouse["port"], clickhouse["protocol"]) == (
        "clickhouse", 9000, "native"
    )
    assert clickhouse["defaultDatabase"] == "cx"
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_variables_are_defined_and_use_provisioned_datasources(name: str) -> None:
    board = DASHBOARDS[name]
    provisioned = provisioned_datasources()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for variable in variables.values():
        assert provisioned.get(variable["datasource"]["uid"]) == variable["datasource"]["type"]
        assert variable_query(variable).strip()
    for query in panel_queries(name, board):
        missing = variables_used(query.text) - set(variables)
        assert not missing, f"{query.name} uses undefined variables {missing}"


def test_clickhouse_sql_avoids_what_clickhouse_18_16_lacks() -> None:
    # 18.16 has neither toStartOfInterval (which $__timeInterval expands to) nor window
    # functions; $__timeFilter_ms expands to fromUnixTimestamp64Milli (21.x).
    forbidden = re.compile(
        r"toStartOfInterval|\$__timeInterval|\$__timeFilter_ms|\$__fromTime_ms|\$__toTime_ms"
        r"|\bOVER\s*\(|\bWINDOW\b|occurred_at64",
        re.IGNORECASE,
    )
    for query in _queries():
        if query.datasource_type == CLICKHOUSE_TYPE:
            assert not forbidden.search(query.text), query.name


def test_prometheus_queries_and_rules_name_only_exported_metrics() -> None:
    exported = _exported_sample_names()
    exprs = [q.text for q in _queries() if q.datasource_type == PROMETHEUS_TYPE]
    rules = yaml.safe_load(RULES.read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\bcx_[a-z0-9_]+", expr)}
    assert used, "no cx_ metric found: the pattern or the files changed"
    unknown = used - exported
    assert not unknown, f"not defined in streams/metrics.py or sinks/metrics.py: {sorted(unknown)}"


def test_substitution_leaves_no_macro_behind() -> None:
    for query in _queries():
        if query.datasource_type == CLICKHOUSE_TYPE:
            text = clickhouse_sql(query.text, from_s=0, to_s=3600, variables={"channel": ["web"]})
            assert "toDateTime(0)" in text or "$__" not in query.text, query.name
        else:
            text = prometheus_expr(
                query.text, rate_interval="1m", variables={"instance": ["127.0.0.1:9464"]}
            )
        assert "$" not in text, query.name


@pytest.fixture(scope="module")
def chdb_session() -> Iterator[tuple[Any, str]]:
    """A modern ClickHouse in-process (chdb) with the project's migrations applied."""
    from chdb import session

    database = f"dash_{uuid.uuid4().hex[:8]}"
    sess = session.Session()

    def execute(sql: str) -> list[tuple[str, ...]]:
        result = str(sess.query(sql, "TabSeparated"))
        return [tuple(line.split("\t")) for line in result.splitlines()]

    sess.query(f"CREATE DATABASE {database}")
    version = tuple(int(p) for p in execute("SELECT version()")[0][0].split(".")[:2])
    apply_migrations(execute, server_version=version, database=database)
    sess.query(f"USE {database}")
    try:
        yield sess, database
    finally:
        sess.query(f"DROP DATABASE IF EXISTS {database}")
        sess.close()


def test_clickhouse_panel_queries_compile_on_modern_clickhouse(
    chdb_session: tuple[Any, str],
) -> None:
    sess, _ = chdb_session
    overview = DASHBOARDS["cx-overview.json"]
    texts = [(q.text, q.name) for q in _queries() if q.datasource_type == CLICKHOUSE_TYPE]
    texts += [
        (variable_query(v), f"variable {v['name']}")
        for v in overview["templating"]["list"]
        if v["datasource"]["type"] == CLICKHOUSE_TYPE
    ]
    assert texts
    errors: list[str] = []
    for text, name in texts:
        sql = clickhouse_sql(text, from_s=1_700_000_000, to_s=1_700_003_600,
                             variables={"channel": ["web", "app"]})
        try:
            sess.query(sql, "TabSeparated")
        except Exception as exc:  # chdb raises a plain RuntimeError with the server message
            errors.append(f"{name}: {exc}")
    assert not errors, "\n".join(errors)
