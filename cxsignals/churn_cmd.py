"""``cxsignals churn fit|eval|cdnow``: fit the churn model, measure it, get the CDNOW data.

``eval`` runs every customer's calibration purchases through the worker's own engine
(:class:`streams.core.engine.Engine`, states built directly, so any dates are accepted: the
live contract's bounds on ``occurred_at`` are not involved) and takes the churn risk of each
state as of the calibration end with the worker's :class:`~streams.core.churn.ChurnScorer`.
Dates are taken at 12:00 UTC, the risk as of 12:00 UTC on the calibration end date.
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cxsignals.settings import Settings

EPILOG = """\
FILE.csv: a header and one row per purchase, customer_id,date[,amount] (ISO date).

examples:
  cxsignals churn cdnow master /tmp/cdnow_master.csv
  cxsignals churn eval --transactions /tmp/cdnow_master.csv --calibration-end 1997-09-30 \\
      --horizon-days 273 --predictions /tmp/cdnow_pred.csv
  cxsignals churn cdnow sample /tmp/cdnow_sample.csv
  cxsignals churn fit --transactions /tmp/cdnow_sample.csv --end 1997-09-30 --out params.json
  cxsignals churn fit --out params.json   # history in ClickHouse, up to its last purchase day
  CX_CHURN_PARAMS_PATH=params.json cxsignals worker

exit codes: 0 done, 1 the data cannot be fitted, 2 bad input or ClickHouse unreachable
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "churn",
        help="fit and evaluate the churn model (BG/NBD, Gamma-Gamma, calibrated risk)",
        description="Fit the churn model, measure it on a transaction file, get CDNOW.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="churn_action", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit", help="fit the model and write the params file", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("--transactions", type=Path, metavar="FILE.csv",
                     help="purchases from this file (default: touchpoint_events in ClickHouse)")
    fit.add_argument("--end", type=date.fromisoformat, metavar="YYYY-MM-DD",
                     help="last day of history used (default: the last purchase day)")
    fit.add_argument("--horizon-days", type=float, default=None,
                     help="churn horizon (default: CX_CHURN_HORIZON_DAYS)")
    fit.add_argument("--train-horizon-days", type=float, default=None,
                     help="outcome window of the training cut-off (default: min(horizon, "
                          "a third of the history))")
    fit.add_argument("--out", type=Path, required=True, help="params file to write (JSON)")
    fit.set_defaults(func=run_fit)
    ev = actions.add_parser(
        "eval", help="fit on a calibration period and measure the risk on the holdout",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--transactions", type=Path, required=True, metavar="FILE.csv")
    ev.add_argument("--calibration-end", type=date.fromisoformat, required=True,
                    metavar="YYYY-MM-DD")
    ev.add_argument("--horizon-days", type=int, required=True, metavar="N")
    ev.add_argument("--predictions", type=Path, metavar="OUT.csv",
                    help="write customer_id,churn_risk per customer seen in calibration")
    ev.set_defaults(func=run_eval)
    cd = actions.add_parser(
        "cdnow", help="convert CDNOW (shipped in the lifetimes wheel) to FILE.csv",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cd.add_argument("which", choices=("master", "sample"))
    cd.add_argument("out", type=Path, metavar="OUT.csv")
    cd.set_defaults(func=run_cdnow)


# ------------------------------------------------------------------ data


def cdnow_path(which: str) -> Path:
    """CDNOW_master.txt or CDNOW_sample.txt inside the installed lifetimes wheel (located
    through its metadata, without importing lifetimes). Raises FileNotFoundError."""
    from importlib.metadata import PackageNotFoundError, files

    name = f"CDNOW_{which}.txt"
    try:
        for f in files("lifetimes") or []:
            if f.name == name:
                return Path(str(f.locate()))
    except PackageNotFoundError:
        pass
    raise FileNotFoundError(f"{name} not found: install the dev extra (pip install -e '.[dev]')")


def convert_cdnow(which: str, out: Path) -> int:
    """Write CDNOW as FILE.csv (customer_id,date,amount); returns the number of rows."""
    n = 0
    with cdnow_path(which).open() as src, out.open("w", newline="") as dst:
        w = csv.writer(dst)
        w.writerow(("customer_id", "date", "amount"))
        for line in src:
            parts = line.split()
            if not parts or not parts[-1].replace(".", "", 1).isdigit():
                continue  # the master file's header
            # master: id date cds dollars; sample: master id, sample id, date, cds, dollars
            customer, day = parts[0], parts[-3]
            w.writerow((customer, f"{day[:4]}-{day[4:6]}-{day[6:8]}", parts[-1]))
            n += 1
    return n


def read_transactions(path: Path) -> list[tuple[str, int, float]]:
    """(customer_id, date ordinal, amount) per row of FILE.csv. Raises ValueError naming the
    line of the first bad row."""
    rows: list[tuple[str, int, float]] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"customer_id", "date"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the header must name customer_id,date[,amount]")
        for i, row in enumerate(reader, start=2):
            try:
                amount = float(row["amount"]) if row.get("amount") not in (None, "") else 0.0
                rows.append((row["customer_id"], date.fromisoformat(row["date"]).toordinal(),
                             amount))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{i}: {exc}") from None
    return rows


def clickhouse_transactions(settings: Settings) -> list[tuple[str, int, float]]:
    """Purchases of identified customers from touchpoint_events (one row per event id)."""
    from clickhouse_driver import Client

    p = settings.clickhouse
    client = Client(host=p.host, port=p.port, user=p.user, password=p.password,
                    connect_timeout=5, send_receive_timeout=600)
    try:
        result = client.execute(
            "SELECT customer_id, toDate(occurred_at), any(order_value) "
            f"FROM {p.database}.touchpoint_events "
            "WHERE event_type = 'purchase' AND customer_id != '' "
            "GROUP BY customer_id, event_id, toDate(occurred_at)"
        )
    finally:
        client.disconnect()
    return [(str(c), d.toordinal(), float(v)) for c, d, v in result]


# ------------------------------------------------------------------ fit


def run_fit(args: argparse.Namespace, settings: Settings) -> int:
    from streams.core.churn_fit import Transactions, default_train_horizon, fit_model

    try:
        if args.transactions is not None:
            rows, source = read_transactions(args.transactions), str(args.transactions)
        else:
            rows, source = clickhouse_transactions(settings), "clickhouse"
    except (OSError, ValueError, EOFError) as exc:
        print(f"cxsignals churn fit: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("cxsignals churn fit: no purchases", file=sys.stderr)
        return 1
    tx = Transactions.of(rows)
    end = args.end.toordinal() if args.end else max(r[1] for r in rows)
    horizon = args.horizon_days or settings.churn_horizon_days
    train_h = args.train_horizon_days or default_train_horizon(tx, end, horizon)
    try:
        model = fit_model(tx, end, train_h, source, horizon)
    except ValueError as exc:
        print(f"cxsignals churn fit: {exc}", file=sys.stderr)
        return 1
    _print_fit(model.fit, model)
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _print_fit(fit: dict[str, Any], model: Any) -> None:
    bg, gg, rk = model.bgnbd, model.gamma_gamma, model.risk
    print(f"customers {fit['customers']}, repeat buyers {fit['repeat_buyers']}")
    print(f"BG/NBD       r={bg.r:.4f} alpha={bg.alpha_days:.4f} days a={bg.a:.4f} b={bg.b:.4f}  "
          f"LL={fit['bgnbd']['log_likelihood']:.3f} converged={fit['bgnbd']['converged']}")
    print(f"Gamma-Gamma  p={gg.p:.4f} q={gg.q:.4f} gamma={gg.gamma:.4f}  "
          f"LL={fit['gamma_gamma']['log_likelihood']:.3f} "
          f"converged={fit['gamma_gamma']['converged']}")
    coef = " ".join(f"{n}={c:+.4f}" for n, c in zip(
        ("intercept", "p0_logit", "log_x", "recency_months", "log_spend"),
        (rk.intercept, *rk.coef), strict=True))
    print(f"risk model   {coef}  (trained at {rk.train_horizon_days:g} days before the end, "
          f"{fit['risk']['training_customers']} customers, LL={fit['risk']['log_likelihood']:.3f}"
          f", converged={fit['risk']['converged']}); horizon {rk.horizon_days:g} days, "
          f"shift {rk.horizon_shift:+.4f}")


# ------------------------------------------------------------------ eval


def score_through_engine(
    rows: list[tuple[str, int, float]], end: int, model: Any, horizon_days: float
) -> tuple[list[str], list[float], list[float], list[int]]:
    """Every customer's purchases up to day ``end`` through the worker's Engine; returns
    (customers, churn risk as of ``end``, days since the last purchase, purchase days)."""
    from schemas.event_records import PurchaseEvent, PurchaseProps
    from schemas.events import Channel
    from streams.core.engine import Engine, EngineConfig
    from streams.core.rule_config import load_rules
    from streams.core.sentiment import VaderAnalyzer
    from streams.core.state import CustomerState

    engine = Engine(EngineConfig(churn_model=model, churn_horizon_days=horizon_days),
                    load_rules(), VaderAnalyzer())
    noon = timedelta(hours=12)
    at = datetime.fromordinal(end).replace(tzinfo=timezone.utc) + noon
    now = at + timedelta(days=1)  # never clamps an event (an event is never ahead of now)
    states: dict[str, CustomerState] = {}
    for i, (customer, day, amount) in enumerate(sorted(rows, key=lambda r: (r[1], r[0]))):
        if day > end:
            continue
        ev = PurchaseEvent(
            event_id=f"tx-{i}", schema_version=1, customer_id=customer, channel=Channel.web,
            occurred_at=datetime.fromordinal(day).replace(tzinfo=timezone.utc) + noon,
            properties=PurchaseProps(order_id=f"o-{i}", order_value=amount, currency="USD"),
        )
        states[customer] = engine.process(states.get(customer), customer, ev, now=now).state
    scorer = engine._churn_risk  # the worker's scorer, as configured
    at_s = at.timestamp()
    customers = list(states)
    risk = [scorer(states[c], states[c].score, at_s) for c in customers]
    recency = [(at_s - (states[c].last_purchase or at_s)) / 86400.0 for c in customers]
    days = [states[c].purchase_days for c in customers]
    return customers, risk, recency, days


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    import numpy as np

    from streams.core.churn_fit import (
        Transactions,
        calibration_table,
        default_train_horizon,
        fit_model,
        roc_auc,
    )

    try:
        rows = read_transactions(args.transactions)
    except (OSError, ValueError) as exc:
        print(f"cxsignals churn eval: {exc}", file=sys.stderr)
        return 2
    end = args.calibration_end.toordinal()
    calib = [r for r in rows if r[1] <= end]
    if not calib:
        print("cxsignals churn eval: no purchase in the calibration period", file=sys.stderr)
        return 1
    tx = Transactions.of(calib)
    train_h = default_train_horizon(tx, end, args.horizon_days)
    try:
        model = fit_model(tx, end, train_h, str(args.transactions), args.horizon_days)
    except ValueError as exc:
        print(f"cxsignals churn eval: {exc}", file=sys.stderr)
        return 1
    _print_fit(model.fit, model)
    customers, risk, recency, days = score_through_engine(rows, end, model, args.horizon_days)
    after = Transactions.of(rows)
    churned = 1.0 - after.bought_in(customers, end, end + args.horizon_days)
    pred = np.array(risk)
    result = {
        "customers": len(customers),
        "observed_churn": float(churned.mean()),
        "mean_predicted": float(pred.mean()),
        "calibration_error": abs(float(pred.mean()) - float(churned.mean())),
        "auc": roc_auc(pred, churned),
        "brier": float(np.mean((pred - churned) ** 2)),
        "auc_recency": roc_auc(np.array(recency), churned),
        "auc_frequency": roc_auc(-np.array(days, dtype=float), churned),
    }
    print(f"\ncalibration end {args.calibration_end}, horizon {args.horizon_days} days, "
          f"{result['customers']} customers, churned {result['observed_churn']:.4f}")
    print(f"churn risk          AUC {result['auc']:.4f}  Brier {result['brier']:.4f}  "
          f"mean predicted {result['mean_predicted']:.4f}  "
          f"calibration error {result['calibration_error']:.4f}")
    print(f"baseline recency    AUC {result['auc_recency']:.4f}  (days since the last purchase)")
    print(f"baseline frequency  AUC {result['auc_frequency']:.4f}  (number of purchase days)")
    print("\n  risk bin    customers  predicted  observed")
    for lo, hi, n, p, o in calibration_table(pred, churned):
        print(f"  {lo:.1f}-{hi:.1f}  {n:10d}  {p:9.4f}  {o:8.4f}" if n else
              f"  {lo:.1f}-{hi:.1f}  {n:10d}          -         -")
    if args.predictions:
        with args.predictions.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("customer_id", "churn_risk"))
            w.writerows((c, f"{r:.6f}") for c, r in zip(customers, risk, strict=True))
        print(f"\nwrote {args.predictions}")
    args.result = result  # for callers in-process (tests)
    return 0


def run_cdnow(args: argparse.Namespace, settings: Settings) -> int:
    try:
        n = convert_cdnow(args.which, args.out)
    except OSError as exc:
        print(f"cxsignals churn cdnow: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} purchases to {args.out}")
    return 0
