"""``cxsignals report``: the CX KPIs from ClickHouse as a terminal table or JSON."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from cxsignals.settings import Settings
from sinks.outcomes import OUTCOME_CUTS, collect_outcomes
from sinks.queries import CUTS, collect_report

EPILOG = """\
KPIs (definitions in docs/clickhouse.md and ../shared/DOMAIN.md): NPS, CSAT (mean, % 4-5),
CES (mean, % 5-7) and cart abandonment rate per cut; the journey funnel with drop-off; the
customers at highest churn risk (latest score) with their top reasons; alerts by rule.
Numbers are exact (deduplicated raw events); --source rollup reads the hourly rollup instead
(fast, hour-aligned, counts a redelivered batch twice).

`cxsignals report outcomes` shows, per rule, the alerts sent and withheld (control group) whose
outcome window closed, the success rate of each group and the uplift of sending, absolute and
relative, with 95 % confidence intervals (docs/alerts.md "Reading the report").

examples:
  cxsignals report
  cxsignals report --since 7d --by stage
  cxsignals report --by segment --format json | jq .cuts
  cxsignals report outcomes --since 30d
  cxsignals report outcomes --since 30d --by segment --format json

exit codes: 0 done, 1 query failed, 2 ClickHouse unreachable or a bad option
"""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration_s(text: str) -> int:
    """``'24h'`` -> 86400; units s, m, h, d, w."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 90s, 30m, 24h, 7d or 2w"
        )
    return int(float(match.group(1)) * _UNIT_S[match.group(2)])


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="print CX KPIs (NPS, CSAT, CES, funnel, churn risk, alerts) from ClickHouse",
        description="Print the CX report for a recent time window from ClickHouse.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "view", nargs="?", choices=("kpis", "outcomes"), default="kpis",
        help="kpis (default) or outcomes: success and uplift per rule, sent vs control",
    )
    parser.add_argument(
        "--since", type=parse_duration_s, default=None, metavar="DURATION",
        help="window length back from now (default 24h; outcomes: 30d, by alert event time)",
    )
    parser.add_argument(
        "--by", choices=tuple(CUTS), default=None,
        help="cut for the KPI table (default channel); outcomes: channel or segment of the "
        "alert's trigger event (default: per rule only)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--top", type=int, default=10, help="customers at risk to list")
    parser.add_argument(
        "--source", choices=("raw", "rollup"), default="raw",
        help="raw = exact (default); rollup = hourly rollup, for a quick look",
    )
    parser.set_defaults(func=run)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def render_table(report: dict[str, Any]) -> str:
    """The report as plain-text tables for a terminal."""
    window_h = (report["window"]["until_s"] - report["window"]["since_s"]) / 3600
    parts = [f"CX report: last {window_h:g} h, by {report['by']} ({report['source']} data)", ""]
    kpi_headers = (report["by"], "events", "NPS", "n", "CSAT", "CSAT%4-5", "n", "CES",
                   "CES%5-7", "n", "abandon", "sentiment")
    kpi_rows = []
    for entry in [*report["cuts"], {"cut": "ALL", **report["overall"]}]:
        kpi_rows.append((
            entry["cut"] or "(none)", str(entry["events"]),
            _fmt(entry["nps"]), str(entry["nps_responses"]),
            _fmt(entry["csat_mean"], 2), _fmt(entry["csat_pct_4_5"]), str(entry["csat_responses"]),
            _fmt(entry["ces_mean"], 2), _fmt(entry["ces_pct_5_7"]), str(entry["ces_responses"]),
            _pct(entry["cart_abandonment_rate"]), _fmt(entry["sentiment_mean"], 2),
        ))
    parts += [_table(kpi_headers, kpi_rows), ""]
    if report["revenue"]:
        parts += [_table(("currency", "purchases", "revenue"), [
            (r["currency"] or "(none)", str(r["purchases"]), f"{r['revenue']:.2f}")
            for r in report["revenue"]
        ]), ""]
    parts += ["Journey funnel (distinct customers)", _table(("stage", "customers", "drop-off"), [
        (s["stage"], str(s["customers"]), _pct(s["drop_off"])) for s in report["funnel"]
    ]), ""]
    parts += ["Highest churn risk (latest score)", _table(
        ("customer", "churn risk", "score", "stage", "top reasons"),
        [(c["customer_id"], f"{c['churn_risk']:.2f}", f"{c['experience_score']:.0f}",
          c["journey_stage"], ", ".join(c["top_reasons"]) or "-") for c in report["top_churn"]],
    ), ""]
    parts += ["Alerts by rule", _table(("rule", "kind", "alerts"), [
        (a["rule"], a["kind"], str(a["alerts"])) for a in report["alerts"]
    ])]
    return "\n".join(parts)


def _ci(values: list[float] | None) -> str:
    return "-" if values is None else f"[{100 * values[0]:+.1f}, {100 * values[1]:+.1f}]"


def _pp(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


def render_outcomes(report: dict[str, Any]) -> str:
    """The outcomes report as a plain-text table (rates in %, uplift in points and %)."""
    days = (report["window"]["until_s"] - report["window"]["since_s"]) / 86_400
    by = report["by"]
    parts = [f"Alert outcomes: alerts of the last {days:g} d whose outcome window closed"
             + (f", by {by}" if by else ""), ""]
    headers = ["rule", *([by] if by else []), "sent", "withheld", "success sent",
               "success ctrl", "uplift pp", "95% CI pp", "uplift rel %", "95% CI %",
               "pending", "note"]
    rows = []
    for e in report["rules"]:
        rows.append([e["rule"], *([e["cut"] or "(none)"] if by else []), str(e["sent"]),
                     str(e["withheld"]), _pct(e["sent_success_rate"]),
                     _pct(e["withheld_success_rate"]), _pp(e["uplift_abs"]),
                     _ci(e["uplift_abs_ci95"]), _pp(e["uplift_rel"]), _ci(e["uplift_rel_ci95"]),
                     str(e["pending"]), e["note"]])
    parts.append(_table(headers, rows) if rows else "(no alerts in the window)")
    definitions = sorted({(e["rule"], e["success"]) for e in report["rules"]})
    if definitions:
        parts += ["", "Success per rule:"]
        parts += [f"  {rule}: {success}" for rule, success in definitions]
    return "\n".join(parts)


def resolve_window(args: argparse.Namespace) -> tuple[int, str | None]:
    """``--since`` in seconds and the cut, with the view's defaults (kpis: 24h by channel;
    outcomes: 30d per rule). Raises ValueError for a cut the outcomes cannot use."""
    if args.view == "outcomes":
        if args.by is not None and args.by not in OUTCOME_CUTS:
            raise ValueError(f"--by must be one of {', '.join(OUTCOME_CUTS)} for outcomes")
        return (args.since if args.since is not None else parse_duration_s("30d")), args.by
    return (args.since if args.since is not None else parse_duration_s("24h")), (
        args.by or "channel")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from clickhouse_driver import Client
    from clickhouse_driver import errors as ch_errors

    # The driver logs each refused connection with a traceback; the message below says it.
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)
    params = settings.clickhouse
    outcomes = args.view == "outcomes"
    try:
        since, by = resolve_window(args)
    except ValueError as exc:
        print(f"cxsignals report outcomes: {exc}", file=sys.stderr)
        return 2
    until_s = int(time.time())
    client = Client(
        **params.client_options(), connect_timeout=5, send_receive_timeout=120,
    )
    try:
        if outcomes:
            report = collect_outcomes(client.execute, database=params.database,
                                      since_s=until_s - since, until_s=until_s, by=by)
        else:
            report = collect_report(
                client.execute,
                database=params.database,
                since_s=until_s - since,
                until_s=until_s,
                by=by or "channel",
                top_n=args.top,
                source=args.source,
            )
    except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as exc:
        print(
            f"cxsignals report: ClickHouse is unreachable at {params.where} "
            f"({exc}). Start it (make services) or set CLICKHOUSE_URL.",
            file=sys.stderr,
        )
        return 2
    except ch_errors.ServerException as exc:
        print(f"cxsignals report: query failed: {exc.message} (run `cxsignals migrate`?)",
              file=sys.stderr)
        return 1
    finally:
        client.disconnect()
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_outcomes(report) if outcomes else render_table(report))
    return 0
