"""Every panel query of both Grafana dashboards returns data from the real services.

Grafana cannot run on the project's machines, so this test does what Grafana would: a live
worker (``cxsignals worker``, from the fixtures) processes simulator traffic into its own
ClickHouse database; a Prometheus process of this test scrapes that worker (its metrics port is
random) with the project's rules loaded. Each panel query, with Grafana's macros and template
variables substituted (tests/dashboards.py), then runs against ClickHouse and Prometheus; the
test fails if any query errors or returns nothing numeric.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cxsignals.simulator import SimConfig, generate
from tests.dashboards import (
    CLICKHOUSE_TYPE,
    PROMETHEUS_TYPE,
    PanelQuery,
    clickhouse_sql,
    load_dashboards,
    panel_queries,
    prometheus_expr,
    variable_query,
)
from tests.integration.conftest import Stack, WorkerProcess, clickhouse_client, publish
from tests.integration.services import REPO, free_port, http_get, stop_process, wait_until

RULES = REPO / "deploy" / "prometheus" / "rules" / "cxsignals.rules.yml"
SCRAPE_INTERVAL_S = 1
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 * scrape interval), with
# the 1 s step used below.
RATE_INTERVAL = f"{4 * SCRAPE_INTERVAL_S}s"
SIM_EVENTS = 4000
SIM_GAP_S = 0.05


@contextlib.contextmanager
def prometheus_scraping(jobs: dict[str, str], tmp: Path) -> Iterator[str]:
    """A Prometheus of this test only (free port, storage under ``tmp``) scraping each job's
    target (``cxsignals-worker``, ``cxsignals-sink``) with the project's rules; yields its base
    URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is not installed (Debian: apt-get install prometheus)",
                    pytrace=False)
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in jobs.items()
        ],
    }))
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'prom-data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log_path.read_text()}")
            with contextlib.suppress(OSError):
                return "Ready" in http_get(f"{url}/-/ready")
            return False

        wait_until(ready, 60, "the test's Prometheus to be ready")
        yield url
    finally:
        stop_process(proc)


def _prom_api(url: str, path: str, **params: str | list[str]) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    body = json.loads(http_get(f"{url}/api/v1/{path}?{query}", timeout_s=30))
    assert body["status"] == "success", body
    return body["data"]


def _has_number(rows: list[tuple[Any, ...]]) -> bool:
    return any(
        isinstance(cell, (int, float)) and not isinstance(cell, bool)
        for row in rows for cell in row
    )


def _finite_points(data: dict[str, Any]) -> int:
    return sum(
        1 for series in data["result"] for _, value in series["values"]
        if value not in ("NaN", "+Inf", "-Inf")
    )


def _simulate(stack: Stack) -> set[str]:
    """Publish simulator traffic whose event times lie in the last minutes; return the event
    ids of its valid messages."""
    start = datetime.now(timezone.utc) - timedelta(seconds=SIM_EVENTS * SIM_GAP_S)
    messages = list(generate(SimConfig(
        customers=60, seed=20261123, start=start.replace(microsecond=0),
        total_events=SIM_EVENTS, event_gap_s=SIM_GAP_S, bad_share=0.05,
    )))
    topic = stack.settings().topic_touchpoints
    half = len(messages) // 2
    # Two waves a few seconds apart: the rates Prometheus sees span more than one scrape.
    publish(stack.endpoints.kafka_bootstrap, topic, [(m.key, m.value) for m in messages[:half]])
    time.sleep(4)
    publish(stack.endpoints.kafka_bootstrap, topic, [(m.key, m.value) for m in messages[half:]])
    return {str(orjson.loads(m.value)["event_id"]) for m in messages if not m.is_bad}


def _wait_for_clickhouse(client: Any, expected_ids: set[str], worker: WorkerProcess) -> None:
    def stored() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log()}")
        events = client.execute("SELECT uniqExact(event_id) FROM touchpoint_events")[0][0]
        others = [
            client.execute(f"SELECT count() FROM {table}")[0][0]
            for table in ("customer_scores", "alerts", "dead_letters")
        ]
        return bool(events >= len(expected_ids) and all(others))

    wait_until(stored, 240, "the pipeline to write events, scores, alerts and dead letters",
               interval_s=1.0)


def _clickhouse_failures(
    client: Any, queries: list[PanelQuery], board: dict[str, Any]
) -> list[str]:
    now_s = int(time.time())
    window = {"from_s": now_s - 6 * 3600, "to_s": now_s}  # the dashboards' default: last 6 h
    variables: dict[str, list[str]] = {}
    failures: list[str] = []
    for variable in board["templating"]["list"]:
        if variable["datasource"]["type"] != CLICKHOUSE_TYPE:
            continue
        sql = clickhouse_sql(variable_query(variable), variables={}, **window)
        values = [str(row[0]) for row in client.execute(sql)]
        if not values:
            failures.append(f"variable ${variable['name']}: no values")
        variables[variable["name"]] = values or [""]
    for query in queries:
        try:
            rows = client.execute(clickhouse_sql(query.text, variables=variables, **window))
        except Exception as exc:  # any server error fails the panel
            failures.append(f"{query.name}: {type(exc).__name__}: {exc}")
            continue
        if not _has_number(rows):
            failures.append(f"{query.name}: no data ({rows[:3]!r})")
    return failures


def _prometheus_failures(
    url: str, queries: list[PanelQuery], board: dict[str, Any], since_s: float
) -> list[str]:
    variables: dict[str, list[str]] = {}
    failures: list[str] = []
    for variable in board["templating"]["list"]:
        if variable["datasource"]["type"] != PROMETHEUS_TYPE:
            continue
        # label_values(<selector>, <label>) is answered by the series API.
        definition = variable_query(variable)
        selector, label = definition[len("label_values("):-1].rsplit(",", 1)
        series = _prom_api(url, "series", **{"match[]": selector.strip()})
        values = sorted({s[label.strip()] for s in series if label.strip() in s})
        if not values:
            failures.append(f"variable ${variable['name']}: no values")
        variables[variable["name"]] = values or ["none"]
    for query in queries:
        expr = prometheus_expr(query.text, rate_interval=RATE_INTERVAL, variables=variables)
        try:
            data = _prom_api(url, "query_range", query=expr, start=f"{since_s:.3f}",
                             end=f"{time.time():.3f}", step="1")
        except Exception as exc:  # a PromQL error answers HTTP 400
            failures.append(f"{query.name}: {type(exc).__name__}: {exc}")
            continue
        if not _finite_points(data):
            failures.append(f"{query.name}: no data")
    return failures


def test_every_dashboard_query_returns_data(
    stack: Stack, start_worker: Callable[..., WorkerProcess],
    start_sink: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    dashboards = load_dashboards()
    worker = start_worker()
    sink = start_sink()
    jobs = {"cxsignals-worker": f"127.0.0.1:{worker.metrics_port}",
            "cxsignals-sink": f"127.0.0.1:{sink.metrics_port}"}
    with prometheus_scraping(jobs, tmp_path) as prom_url:
        since_s = time.time()
        rules = _prom_api(prom_url, "rules")["groups"]
        assert {g["name"] for g in rules} == {"cxsignals.recording", "cxsignals.alerts"}

        # Traffic only once Prometheus scrapes both processes: otherwise, on a loaded machine,
        # the whole burst can be over before the first scrape, and a rate() over it (the
        # latency histograms) has no increase to show.
        def scraped() -> bool:
            up = _prom_api(prom_url, "query", query="up")["result"]
            return sum(1 for r in up if r["value"][1] == "1") == len(jobs)

        wait_until(scraped, 60, "the test's Prometheus to scrape the worker and the sink")
        expected_ids = _simulate(stack)
        client = clickhouse_client(stack)
        try:
            _wait_for_clickhouse(client, expected_ids, worker)
            # The worker publishes clv_12m on every score update and the sink stores it
            # (migration 0011): no row reads -1 (unknown); every buyer has a value > 0.
            unknown, valued = client.execute(
                "SELECT countIf(clv_12m < 0), countIf(clv_12m > 0) FROM customer_scores")[0]
            assert unknown == 0 and valued > 0, (unknown, valued)
            overview = dashboards["cx-overview.json"]
            failures = _clickhouse_failures(
                client, panel_queries("cx-overview.json", overview), overview
            )
        finally:
            client.disconnect()

        operations = dashboards["pipeline-operations.json"]
        prom_queries = panel_queries("pipeline-operations.json", operations)
        # Scrapes and rule evaluations trail the worker by a few seconds: retry what has no
        # data yet for a bounded time, then report what still has none.
        deadline = time.monotonic() + 60
        prom_failures = _prometheus_failures(prom_url, prom_queries, operations, since_s)
        while prom_failures and time.monotonic() < deadline:
            time.sleep(3)
            prom_failures = _prometheus_failures(prom_url, prom_queries, operations, since_s)
        failures += prom_failures

    assert not failures, "panel queries without data or with errors:\n" + "\n".join(failures)
