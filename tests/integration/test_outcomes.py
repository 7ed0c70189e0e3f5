"""Issue 16 end to end against the real services: control alerts are recorded in ClickHouse and
never sent; simulated customers react to the alerts actually sent; `cxsignals report outcomes`
recovers the known true uplift within its 95 % interval, and zero where there is none."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.alert_ids import in_control_group
from streams.core.rule_config import DEFAULT_RULES_PATH
from tests.dashboards import clickhouse_sql, load_dashboards, panel_queries
from tests.integration.conftest import (
    Stack,
    WorkerProcess,
    clickhouse_client,
    consume_all,
    json_value,
)
from tests.integration.services import wait_until

BASELINE = 0.2  # customers who buy within 24 h anyway
REACTION = 0.25  # of the others, who buy because of a sent cart_recovery alert
TRUE_UPLIFT = REACTION * (1 - BASELINE)  # 0.20
CONTROL_SHARE = 0.5  # a big control group: a meaningful interval from a quick test


def _rules_file(tmp: Path, share: float) -> Path:
    doc = json.loads(DEFAULT_RULES_PATH.read_text())
    for rule in doc["rules"]:
        if rule["id"] == "cart_recovery":
            rule["control_share"] = share
    path = tmp / "rules.json"
    path.write_text(json.dumps(doc))
    return path


def _experiment(cli: Callable[..., subprocess.CompletedProcess[str]], start: datetime,
                customers: int, prefix: str, segment: str, *extra: str) -> str:
    done = cli("simulate", "--scenario", "cart-experiment", "--customers", str(customers),
               "--baseline", str(BASELINE), "--customer-prefix", prefix, "--segment", segment,
               "--start", start.isoformat(), "--rate", "0", "--no-progress", *extra)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _count(client: Any, sql: str) -> int:
    return int(client.execute(sql)[0][0])


def run_experiment(stack: Stack, cli: Callable[..., subprocess.CompletedProcess[str]],
                   start_worker: Callable[..., WorkerProcess],
                   start_sink: Callable[..., WorkerProcess], customers: int) -> dict[str, Any]:
    rules = _rules_file(stack.tmp, CONTROL_SHARE)
    start_sink()
    start_worker(CX_RULES_PATH=str(rules))
    start = (datetime.now(timezone.utc) - timedelta(days=3)).replace(
        hour=10, minute=0, second=0, microsecond=0)
    # Cohort "zero": nobody reacts to anything. Cohort "uplift": customers react to the
    # cart_recovery alerts they actually receive (the responder reads the alert topic).
    _experiment(cli, start, customers, "z-", "zero")
    summary = _experiment(cli, start, customers, "u-", "uplift",
                          "--respond", f"cart_recovery={REACTION}", "--respond-idle-s", "4",
                          "--respond-max-s", "120")
    client = clickhouse_client(stack)
    db = stack.database
    wait_until(lambda: _count(client, f"SELECT uniqExact(alert_id) FROM {db}.alerts "
                                      "WHERE rule = 'cart_recovery'") >= 2 * customers,
               60, "every cart_recovery alert (sent and control) in ClickHouse")
    reactions = int(summary.split("responder: ")[1].split(" alerts read, ")[1].split()[0])
    assert reactions > 0, summary
    # Reactions are the purchases of the uplift cohort that are not organic: wait for them.
    organic = sum(1 for line in cli("simulate", "--scenario", "cart-experiment", "--customers",
                                    str(customers), "--baseline", str(BASELINE),
                                    "--customer-prefix", "u-", "--dry-run").stdout.splitlines()
                  if '"event_type":"purchase"' in line)
    wait_until(lambda: _count(client, f"SELECT uniqExact(event_id) FROM {db}.touchpoint_events "
                                      "WHERE event_type = 'purchase' AND "
                                      "startsWith(customer_id, 'u-')") >= organic + reactions,
               60, "the organic purchases and the reactions in ClickHouse")
    done = cli("report", "outcomes", "--since", "7d", "--by", "segment", "--format", "json")
    assert done.returncode == 0, done.stderr
    return {"report": orjson.loads(done.stdout), "client": client, "reactions": reactions}


def _entry(report: dict[str, Any], segment: str) -> dict[str, Any]:
    (entry,) = [e for e in report["rules"] if e["rule"] == "cart_recovery" and e["cut"] == segment]
    return entry


def test_control_alerts_are_recorded_never_sent_and_the_report_recovers_the_uplift(
    stack: Stack, cli: Callable[..., subprocess.CompletedProcess[str]],
    start_worker: Callable[..., WorkerProcess], start_sink: Callable[..., WorkerProcess],
) -> None:
    customers = 500
    out = run_experiment(stack, cli, start_worker, start_sink, customers)
    report, client = out["report"], out["client"]
    db = stack.database

    # Control alerts: in ClickHouse with control = 1, exactly the ids the share selects, and
    # never on the alert topic (they are on the control topic, which only the sink reads).
    rows = client.execute(f"SELECT alert_id, control FROM {db}.alerts FINAL "
                          "WHERE rule = 'cart_recovery'")
    control_ids = {a for a, c in rows if c == 1}
    sent_ids = {a for a, c in rows if c == 0}
    assert len(rows) == 2 * customers
    assert control_ids == {a for a, _ in rows if in_control_group(a, CONTROL_SHARE)}
    assert 0.4 < len(control_ids) / len(rows) < 0.6
    settings = stack.settings()
    on_topic = {json_value(r)["alert_id"]
                for r in consume_all(stack.endpoints.kafka_bootstrap,
                                     settings.topic_alerts_marketing, expect=len(sent_ids),
                                     timeout_s=20, settle_s=1)}
    assert on_topic == sent_ids
    assert not on_topic & control_ids
    on_control_topic = {json_value(r)["alert_id"]
                        for r in consume_all(stack.endpoints.kafka_bootstrap,
                                             settings.topic_alerts_control,
                                             expect=len(control_ids), timeout_s=20)}
    assert on_control_topic == control_ids

    # The loop: only customers with a SENT alert reacted (a reaction is a purchase that the
    # organic baseline does not make: its event id is not an "organic" one).
    uplift, zero = _entry(report, "uplift"), _entry(report, "zero")
    print(json.dumps({"uplift": uplift, "zero": zero}, indent=1))  # shown with -s
    for entry in (uplift, zero):
        assert entry["sent"] + entry["withheld"] == customers
        assert entry["pending"] == 0
        assert entry["note"] != "too small to tell"
    low, high = uplift["uplift_abs_ci95"]
    assert low <= TRUE_UPLIFT <= high, uplift
    assert low > 0, uplift  # and the report sees an uplift at all
    low, high = zero["uplift_abs_ci95"]
    assert low <= 0.0 <= high, zero
    # Control customers of the uplift cohort buy at the organic rate only.
    assert abs(uplift["withheld_success_rate"] - BASELINE) < 0.1

    # The Grafana panel shows the report's numbers (its SQL, macros substituted as Grafana does).
    done = cli("report", "outcomes", "--since", "7d", "--format", "json")
    assert done.returncode == 0, done.stderr
    (whole,) = [e for e in orjson.loads(done.stdout)["rules"] if e["rule"] == "cart_recovery"]
    (panel,) = [q for q in panel_queries("cx-overview.json", load_dashboards()["cx-overview.json"])
                if q.panel_title.startswith("Alert outcomes")]
    now_s = int(datetime.now(timezone.utc).timestamp())
    rows = client.execute(clickhouse_sql(panel.text, from_s=now_s - 7 * 86_400, to_s=now_s,
                                         variables={}), with_column_types=True)
    names = [c[0] for c in rows[1]]
    (cart,) = [dict(zip(names, r, strict=True)) for r in rows[0] if r[0] == "cart_recovery"]
    assert (cart["sent"], cart["withheld"], cart["pending"]) == (
        whole["sent"], whole["withheld"], whole["pending"])
    assert cart["uplift_pp"] == pytest.approx(100 * whole["uplift_abs"], abs=0.051)
    assert [cart["ci95_low_pp"], cart["ci95_high_pp"]] == pytest.approx(
        [100 * v for v in whole["uplift_abs_ci95"]], abs=0.051)


@pytest.mark.chaos
def test_a_large_experiment_pins_the_uplift_down(
    stack: Stack, cli: Callable[..., subprocess.CompletedProcess[str]],
    start_worker: Callable[..., WorkerProcess], start_sink: Callable[..., WorkerProcess],
) -> None:
    out = run_experiment(stack, cli, start_worker, start_sink, 4000)
    uplift, zero = _entry(out["report"], "uplift"), _entry(out["report"], "zero")
    print(json.dumps({"uplift": uplift, "zero": zero}, indent=1))  # shown with -s
    low, high = uplift["uplift_abs_ci95"]
    assert low <= TRUE_UPLIFT <= high and high - low < 0.1, uplift
    low, high = zero["uplift_abs_ci95"]
    assert low <= 0.0 <= high and high - low < 0.1, zero
