"""Test helpers for the Grafana dashboards in deploy/grafana: load them, list every panel query,
and substitute the Grafana macros and template variables the way Grafana and its data source
plugins do before a query reaches ClickHouse or Prometheus.

Substitution covers exactly what the dashboards use; anything left starting with ``$`` raises,
so a new macro cannot slip through untested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES_YML = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_TYPE = "prometheus"

# grafana-clickhouse-datasource macros (backend, seconds precision).
_TIME_FILTER = re.compile(r"\$__timeFilter\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\)")
_SINGLEQUOTE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):singlequote\}")
_PLAIN_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel_id: int
    panel_title: str
    ref_id: str
    datasource_type: str
    datasource_uid: str
    text: str  # rawSql or PromQL expr, as stored

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel_title} [{self.ref_id}]"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard JSON, for every dashboard provisioned from the repo."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every data source in the provisioning file."""
    doc = yaml.safe_load(DATASOURCES_YML.read_text(encoding="utf-8"))
    return {str(ds["uid"]): str(ds["type"]) for ds in doc["datasources"]}


def all_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard_file: str, dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    queries: list[PanelQuery] = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            queries.append(
                PanelQuery(
                    dashboard=dashboard_file,
                    panel_id=int(panel["id"]),
                    panel_title=str(panel.get("title", "")),
                    ref_id=str(target.get("refId", "")),
                    datasource_type=str(source.get("type", "")),
                    datasource_uid=str(source.get("uid", "")),
                    text=str(target.get("rawSql") or target.get("expr") or ""),
                )
            )
    return queries


def variable_query(variable: Mapping[str, Any]) -> str:
    """The query text of a query variable (a string, or Prometheus' editor object)."""
    query = variable.get("query")
    if isinstance(query, Mapping):
        return str(query.get("query") or query.get("rawSql") or "")
    return str(query or "")


def _leftover(text: str) -> None:
    if "$" in text:
        raise ValueError(f"unsubstituted Grafana macro or variable in: {text}")


def clickhouse_sql(
    sql: str, *, from_s: int, to_s: int, variables: Mapping[str, Sequence[str]]
) -> str:
    """SQL as the grafana-clickhouse-datasource plugin sends it: ``$__timeFilter(col)``,
    ``$__fromTime`` / ``$__toTime`` (epoch seconds), ``${var:singlequote}`` (all values, as
    Grafana expands "All" without a custom all value)."""

    def time_filter(match: re.Match[str]) -> str:
        column = match.group(1)
        return f"{column} >= toDateTime({from_s}) AND {column} <= toDateTime({to_s})"

    def quoted(match: re.Match[str]) -> str:
        values = variables[match.group(1)]
        return ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)

    text = _TIME_FILTER.sub(time_filter, sql)
    text = text.replace("$__fromTime", f"toDateTime({from_s})")
    text = text.replace("$__toTime", f"toDateTime({to_s})")
    text = _SINGLEQUOTE_VAR.sub(quoted, text)
    _leftover(text)
    return text


def prometheus_expr(
    expr: str, *, rate_interval: str, variables: Mapping[str, Sequence[str]]
) -> str:
    """PromQL as Grafana sends it: ``$__rate_interval`` and multi-value variables as a regex
    alternation of escaped values (what ``=~"$var"`` expects)."""
    text = expr.replace("$__rate_interval", rate_interval)

    def regex(match: re.Match[str]) -> str:
        values = variables[match.group(1) or match.group(2)]
        # Inside a PromQL string literal a regex backslash is written twice.
        escaped = [re.escape(v).replace("\\", "\\\\") for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    text = _PLAIN_VAR.sub(regex, text)
    _leftover(text)
    return text


def variables_used(text: str) -> set[str]:
    """Names of the template variables (not ``$__`` macros) a query refers to."""
    names = {m.group(1) for m in _SINGLEQUOTE_VAR.finditer(text)}
    for match in _PLAIN_VAR.finditer(text):
        name = match.group(1) or match.group(2)
        if not name.startswith("__"):
            names.add(name)
    return names
