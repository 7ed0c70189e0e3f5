"""The read side: SQL for the CX KPIs, and the KPI arithmetic of ../shared/DOMAIN.md.

Exact numbers come from ``touchpoint_events FINAL`` (deduplicated on event_id even before
merges) or from distinct counts, which duplicates cannot inflate. The hourly rollup queries
are cheap and meant for dashboards: they count a batch that was delivered twice (crash between
insert and offset commit) twice. Both produce the same counters, so the same KPI function
applies to either, and a test checks that they agree when nothing was redelivered.

Every query takes ``%(since_s)s`` / ``%(until_s)s`` as epoch seconds (clickhouse-driver
parameters), which keeps them free of timezone conversions on every server version.
``execute(sql, params)`` is any callable returning rows as tuples (clickhouse-driver's
``Client.execute``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from schemas.events import STAGE_ORDER

Execute = Callable[[str, Mapping[str, Any]], Sequence[Sequence[Any]]]

# --by value -> column of touchpoint_events and of the rollup.
CUTS: dict[str, str] = {
    "channel": "channel",
    "touchpoint": "touchpoint",
    "stage": "journey_stage",
    "segment": "segment",
}

# Counter name -> expression over touchpoint_events rows. The materialized view of migration
# 0005 computes the same counters per hour; the rollup query sums them.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("events", "count()"),
    ("nps_promoters", "countIf(survey = 'nps' AND score >= 9)"),
    ("nps_passives", "countIf(survey = 'nps' AND score >= 7 AND score <= 8)"),
    ("nps_detractors", "countIf(survey = 'nps' AND score <= 6)"),
    ("csat_sum", "sumIf(toUInt64(score), survey = 'csat')"),
    ("csat_count", "countIf(survey = 'csat')"),
    ("csat_4_5", "countIf(survey = 'csat' AND score >= 4)"),
    ("ces_sum", "sumIf(toUInt64(score), survey = 'ces')"),
    ("ces_count", "countIf(survey = 'ces')"),
    ("ces_5_7", "countIf(survey = 'ces' AND score >= 5)"),
    ("sentiment_sum", "sumIf(toFloat64(sentiment), has_sentiment = 1)"),
    ("sentiment_count", "countIf(has_sentiment = 1)"),
    ("checkouts_started", "countIf(event_type = 'checkout_started')"),
    ("carts_abandoned", "countIf(event_type = 'cart_abandon')"),
    ("purchases", "countIf(event_type = 'purchase')"),
    ("payment_failures", "countIf(event_type = 'payment_failed')"),
    ("app_errors", "countIf(event_type = 'app_error')"),
    ("support_contacts", "countIf(event_type = 'support_contact')"),
    ("support_resolved", "countIf(event_type = 'support_contact' AND resolved = 1)"),
)
COUNTER_NAMES: tuple[str, ...] = tuple(name for name, _ in COUNTERS)


def _cut_column(by: str | None) -> str:
    if by is None:
        return "''"
    if by not in CUTS:
        raise ValueError(f"--by must be one of {', '.join(CUTS)}, got {by!r}")
    return CUTS[by]


def counters_sql(database: str, by: str | None) -> str:
    """Exact counters per cut from the deduplicated raw events (one row per cut value)."""
    select = ",\n    ".join(f"{expr} AS {name}" for name, expr in COUNTERS)
    return (
        f"SELECT {_cut_column(by)} AS cut,\n    {select}\n"
        f"FROM {database}.touchpoint_events FINAL\n"
        "WHERE occurred_at >= toDateTime(%(since_s)s) AND occurred_at < toDateTime(%(until_s)s)\n"
        "GROUP BY cut ORDER BY cut"
    )


def rollup_counters_sql(database: str, by: str | None) -> str:
    """Counters per cut from the hourly rollup (dashboards; hour-aligned; see module doc)."""
    select = ",\n    ".join(f"sum({name}) AS {name}" for name in COUNTER_NAMES)
    return (
        f"SELECT {_cut_column(by)} AS cut,\n    {select}\n"
        f"FROM {database}.touchpoint_rollup_hourly\n"
        "WHERE hour >= toStartOfHour(toDateTime(%(since_s)s)) AND hour < toDateTime(%(until_s)s)\n"
        "GROUP BY cut ORDER BY cut"
    )


def revenue_sql(database: str) -> str:
    """Exact revenue per currency (never summed across currencies)."""
    return (
        "SELECT currency, count() AS purchases, sum(order_value) AS revenue\n"
        f"FROM {database}.touchpoint_events FINAL\n"
        "WHERE event_type = 'purchase'\n"
        "  AND occurred_at >= toDateTime(%(since_s)s) AND occurred_at < toDateTime(%(until_s)s)\n"
        "GROUP BY currency ORDER BY currency"
    )


def funnel_sql(database: str) -> str:
    """Distinct known customers per journey stage (duplicates cannot change a distinct count)."""
    return (
        "SELECT journey_stage, uniqExact(customer_id) AS customers\n"
        f"FROM {database}.touchpoint_events\n"
        "WHERE customer_id != ''\n"
        "  AND occurred_at >= toDateTime(%(since_s)s) AND occurred_at < toDateTime(%(until_s)s)\n"
        "GROUP BY journey_stage"
    )


def top_churn_sql(database: str) -> str:
    """Latest score per customer (argMax by update time), highest churn risk first."""
    return (
        "SELECT customer_id,\n"
        "    argMax(churn_risk, updated_ms) AS latest_churn_risk,\n"
        "    argMax(experience_score, updated_ms) AS latest_experience_score,\n"
        "    argMax(journey_stage, updated_ms) AS latest_stage,\n"
        "    argMax(explanation, updated_ms) AS latest_explanation,\n"
        "    max(updated_ms) AS last_updated_ms\n"
        f"FROM {database}.customer_scores\n"
        "GROUP BY customer_id\n"
        "ORDER BY latest_churn_risk DESC, customer_id\n"
        "LIMIT %(limit)s"
    )


def alert_counts_sql(database: str) -> str:
    """Alerts per rule and kind, each alert_id once."""
    return (
        "SELECT rule, kind, count() AS alerts\n"
        f"FROM {database}.alerts FINAL\n"
        "WHERE event_time >= toDateTime(%(since_s)s) AND event_time < toDateTime(%(until_s)s)\n"
        "GROUP BY rule, kind ORDER BY alerts DESC, rule, kind"
    )


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return None if denominator == 0 else scale * numerator / denominator


def kpis(counters: Mapping[str, float]) -> dict[str, float | int | None]:
    """The DOMAIN.md KPIs from counters; None where there is nothing to compute them from.

    NPS = % promoters (9-10) - % detractors (0-6) over all NPS answers, in [-100, 100].
    CSAT: mean of 1-5 answers and % of 4-5. CES: mean of 1-7 answers and % of 5-7.
    Cart abandonment rate = abandoned carts / checkouts started.
    """
    c = {name: counters.get(name, 0) for name in COUNTER_NAMES}
    nps_n = c["nps_promoters"] + c["nps_passives"] + c["nps_detractors"]
    return {
        "events": int(c["events"]),
        "nps": _ratio(c["nps_promoters"] - c["nps_detractors"], nps_n, 100.0),
        "nps_responses": int(nps_n),
        "csat_mean": _ratio(c["csat_sum"], c["csat_count"]),
        "csat_pct_4_5": _ratio(c["csat_4_5"], c["csat_count"], 100.0),
        "csat_responses": int(c["csat_count"]),
        "ces_mean": _ratio(c["ces_sum"], c["ces_count"]),
        "ces_pct_5_7": _ratio(c["ces_5_7"], c["ces_count"], 100.0),
        "ces_responses": int(c["ces_count"]),
        "sentiment_mean": _ratio(c["sentiment_sum"], c["sentiment_count"]),
        "checkouts_started": int(c["checkouts_started"]),
        "carts_abandoned": int(c["carts_abandoned"]),
        "cart_abandonment_rate": _ratio(c["carts_abandoned"], c["checkouts_started"]),
        "purchases": int(c["purchases"]),
        "payment_failures": int(c["payment_failures"]),
        "app_errors": int(c["app_errors"]),
        "support_contacts": int(c["support_contacts"]),
        "support_resolution_rate": _ratio(c["support_resolved"], c["support_contacts"]),
    }


def counters_by_cut(rows: Sequence[Sequence[Any]]) -> dict[str, dict[str, float]]:
    """Rows of counters_sql / rollup_counters_sql -> {cut value: {counter: value}}."""
    return {
        str(row[0]): dict(zip(COUNTER_NAMES, (float(v) for v in row[1:]), strict=True))
        for row in rows
    }


def funnel(customers_by_stage: Mapping[str, int]) -> list[dict[str, Any]]:
    """Stages in journey order with distinct customers and the drop-off from the stage before
    (1 - this / previous; None for the first stage or after an empty stage)."""
    steps: list[dict[str, Any]] = []
    previous: int | None = None
    for stage in STAGE_ORDER:
        customers = int(customers_by_stage.get(stage.value, 0))
        drop_off = None if not previous else 1 - customers / previous
        steps.append({"stage": stage.value, "customers": customers, "drop_off": drop_off})
        previous = customers
    return steps


def top_reasons(explanation_json: str, limit: int = 3) -> list[str]:
    """The signals that pulled the experience score down most (most negative contributions)."""
    try:
        contributions = orjson.loads(explanation_json or "[]")
    except orjson.JSONDecodeError:
        return []
    negatives = [
        c for c in contributions
        if isinstance(c, dict) and float(c.get("contribution", 0)) < 0
    ]
    negatives.sort(key=lambda c: float(c["contribution"]))
    reasons: list[str] = []
    for c in negatives:
        signal = str(c.get("signal", ""))
        if signal and signal not in reasons:
            reasons.append(signal)
        if len(reasons) == limit:
            break
    return reasons


def collect_report(
    execute: Execute,
    *,
    database: str,
    since_s: int,
    until_s: int,
    by: str | None = "channel",
    top_n: int = 10,
    source: str = "raw",
) -> dict[str, Any]:
    """Everything ``cxsignals report`` prints, as plain data (JSON-ready).

    ``source="raw"`` (default) gives exact KPIs; ``"rollup"`` reads the hourly rollup.
    """
    if source not in ("raw", "rollup"):
        raise ValueError("source must be 'raw' or 'rollup'")
    params: dict[str, Any] = {"since_s": since_s, "until_s": until_s, "limit": top_n}
    sql_of = counters_sql if source == "raw" else rollup_counters_sql
    per_cut = counters_by_cut(execute(sql_of(database, by), params))
    overall = counters_by_cut(execute(sql_of(database, None), params))
    stage_rows = execute(funnel_sql(database), params)
    churn_rows = execute(top_churn_sql(database), params)
    return {
        "window": {"since_s": since_s, "until_s": until_s},
        "source": source,
        "by": by,
        "overall": kpis(overall.get("", {})),
        "cuts": [{"cut": cut, **kpis(c)} for cut, c in per_cut.items()],
        "revenue": [
            {"currency": str(cur), "purchases": int(n), "revenue": float(rev)}
            for cur, n, rev in execute(revenue_sql(database), params)
        ],
        "funnel": funnel({str(stage): int(n) for stage, n in stage_rows}),
        "top_churn": [
            {
                "customer_id": str(row[0]),
                "churn_risk": float(row[1]),
                "experience_score": float(row[2]),
                "journey_stage": str(row[3]),
                "top_reasons": top_reasons(str(row[4])),
                "updated_ms": int(row[5]),
            }
            for row in churn_rows
        ],
        "alerts": [
            {"rule": str(rule), "kind": str(kind), "alerts": int(n)}
            for rule, kind, n in execute(alert_counts_sql(database), params)
        ],
    }
