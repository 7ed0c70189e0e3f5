"""Fitting the churn model (``cxsignals churn fit`` and ``churn eval``): numpy and scipy, never
imported by the worker.

* BG/NBD (r, alpha, a, b) by maximum likelihood (Fader, Hardie and Lee 2005, eq. 6) on repeat
  purchase days, time in days; L-BFGS-B on the log parameters.
* Gamma-Gamma (p, q, gamma) by maximum likelihood on the customers with x > 0 and the mean spend
  of their repeat purchase days (Fader and Hardie 2013).
* The risk model: logistic regression of "no purchase in (c, c + L]" on the scorer's features
  as of c = end - L (the training cut-off, where the outcome is known), with the BG/NBD
  parameters fitted on the history up to c. The features are computed by
  :meth:`ChurnScorer.features`, the worker's own code. Coefficients of features that grow with
  time are bounded >= 0 and of features that a purchase raises <= 0 (see churn_model).

Input everywhere: :class:`Transactions`, purchases as (customer, day number, amount); a day
number is an integer count of days (e.g. ``date.toordinal()``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, gammaln

from streams.core.churn import ChurnScorer, PurchaseHistory
from streams.core.churn_model import (
    FEATURES,
    PURCHASE_INCREASING,
    TIME_INCREASING,
    BgNbd,
    ChurnModel,
    GammaGamma,
    RiskModel,
)

# Tight tolerances: the published CDNOW parameters are matched to 0.2 %, and a and b lie on a
# flat ridge of the BG/NBD likelihood.
_OPTIONS = {"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10}


@dataclass
class Transactions:
    """Purchases by customer: day number -> spend on that day (orders of a day summed)."""

    days: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def of(cls, rows: Iterable[tuple[str, int, float]]) -> Transactions:
        tx = cls()
        for customer, day, amount in rows:
            d = tx.days[customer]
            d[day] = d.get(day, 0.0) + amount
        return tx

    def first_day(self) -> int:
        return min(min(d) for d in self.days.values())

    def histories(self, end: int) -> tuple[list[str], list[PurchaseHistory]]:
        """Customers with a purchase on or before day ``end`` and their history as of ``end``,
        by customer id (so that a fit does not depend on the order the purchases came in)."""
        ids: list[str] = []
        out: list[PurchaseHistory] = []
        for customer, d in sorted(self.days.items()):
            ds = sorted(day for day in d if day <= end)
            if not ds:
                continue
            x = len(ds) - 1
            spend = sum(d[day] for day in ds)
            mean = (spend - d[ds[0]]) / x if x else 0.0
            ids.append(customer)
            out.append(PurchaseHistory(x, float(ds[-1] - ds[0]), float(end - ds[0]), spend, mean))
        return ids, out

    def bought_in(self, customers: list[str], start: int, end: int) -> np.ndarray:
        """1 for each customer with a purchase on a day in (start, end], else 0."""
        return np.array(
            [any(start < day <= end for day in self.days[c]) for c in customers], dtype=float
        )


@dataclass(frozen=True)
class FitResult:
    params: Any
    log_likelihood: float
    converged: bool
    iterations: int
    message: str

    def report(self) -> dict[str, Any]:
        return {
            "log_likelihood": round(self.log_likelihood, 4),
            "converged": self.converged,
            "iterations": self.iterations,
            "message": self.message,
        }


def _arrays(hs: list[PurchaseHistory]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([h.x for h in hs], dtype=float),
        np.array([h.t_x for h in hs], dtype=float),
        np.array([h.big_t for h in hs], dtype=float),
    )


def bgnbd_log_likelihood(
    p: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> float:
    """Sum of the BG/NBD individual log-likelihoods (Fader, Hardie and Lee 2005, eq. 6)."""
    r, alpha, a, b = p.r, p.alpha_days, p.a, p.b
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + big_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))


def fit_bgnbd(hs: list[PurchaseHistory]) -> FitResult:
    """BG/NBD maximum likelihood; starts at r = a = b = 1, alpha = the mean age."""
    x, t_x, big_t = _arrays(hs)

    def nll(lp: np.ndarray) -> float:
        r, alpha, a, b = np.exp(lp)
        return -bgnbd_log_likelihood(BgNbd(r, alpha, a, b), x, t_x, big_t) / len(x)

    start = np.log([1.0, max(1.0, float(big_t.mean())), 1.0, 1.0])
    res = minimize(nll, start, method="L-BFGS-B", options=_OPTIONS)
    r, alpha, a, b = (float(v) for v in np.exp(res.x))
    return FitResult(
        BgNbd(r, alpha, a, b), -float(res.fun) * len(x), bool(res.success), int(res.nit),
        str(res.message),
    )


def gamma_gamma_log_likelihood(g: GammaGamma, x: np.ndarray, m: np.ndarray) -> float:
    """Sum of the Gamma-Gamma individual log-likelihoods (x > 0, m = mean repeat spend > 0)."""
    p, q, gamma = g.p, g.q, g.gamma
    px = p * x
    return float(
        np.sum(
            gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + x * m)
        )
    )


def fit_gamma_gamma(hs: list[PurchaseHistory]) -> FitResult:
    """Gamma-Gamma maximum likelihood on the repeat buyers with a positive mean spend."""
    x = np.array([h.x for h in hs if h.x > 0 and h.mean_repeat_spend > 0], dtype=float)
    m = np.array([h.mean_repeat_spend for h in hs if h.x > 0 and h.mean_repeat_spend > 0])
    if len(x) < 3:
        return FitResult(GammaGamma(), float("nan"), False, 0, "too few repeat buyers")

    def nll(lp: np.ndarray) -> float:
        return -gamma_gamma_log_likelihood(GammaGamma(*np.exp(lp)), x, m) / len(x)

    start = np.log([1.0, 1.0, max(1.0, float(m.mean()))])
    res = minimize(nll, start, method="L-BFGS-B", options=_OPTIONS)
    p, q, gamma = (float(v) for v in np.exp(res.x))
    return FitResult(
        GammaGamma(p, q, gamma), -float(res.fun) * len(x), bool(res.success), int(res.nit),
        str(res.message),
    )


def feature_matrix(model: ChurnModel, hs: list[PurchaseHistory]) -> np.ndarray:
    """The scorer's features of each history, computed by the worker's own code."""
    scorer = ChurnScorer(model)
    return np.array([scorer.features(h) for h in hs], dtype=float).reshape(-1, len(FEATURES))


def fit_risk(features: np.ndarray, churned: np.ndarray) -> FitResult:
    """Logistic regression with the monotonicity bounds; params = (intercept, coef)."""
    design = np.column_stack([np.ones(len(churned)), features])
    n = len(churned)

    def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ w
        ll = float(np.sum(churned * z - np.logaddexp(0.0, z)))
        return -ll / n, -(design.T @ (churned - expit(z))) / n

    bounds: list[tuple[float | None, float | None]] = [(None, None)]
    for name in FEATURES:
        if name in TIME_INCREASING:
            bounds.append((0.0, None))
        elif name in PURCHASE_INCREASING:
            bounds.append((None, 0.0))
        else:
            bounds.append((None, None))
    res = minimize(
        nll, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds,
        options=_OPTIONS,
    )
    return FitResult(
        tuple(float(v) for v in res.x), -float(res.fun) * n, bool(res.success), int(res.nit),
        str(res.message),
    )


def default_train_horizon(tx: Transactions, end: int, horizon_days: float) -> float:
    """min(horizon, a third of the history's span): two thirds stay before the cut-off."""
    return float(min(horizon_days, max(1, (end - tx.first_day()) // 3)))


def horizon_shift(model: ChurnModel, hs: list[PurchaseHistory], horizon_days: float) -> float:
    """The log-odds shift from the training horizon L to ``horizon_days`` H (>= L): the one
    that makes the mean risk of ``hs`` equal to the mean of the BG/NBD chain-rule extension
    P(none in L) * P_BG/NBD(no purchase in (T + L, T + H] | x, t_x, T + L). A constant shift
    keeps the ranking of the risk model and its monotonicity."""
    from scipy.optimize import brentq

    from streams.core.churn_model import p_no_purchase

    L = model.risk.train_horizon_days
    if horizon_days <= L:
        return 0.0
    rk = model.risk
    z = rk.intercept + feature_matrix(model, hs) @ np.array(rk.coef)
    extend = np.array(
        [p_no_purchase(model.bgnbd, h.x, h.t_x, h.big_t + L, horizon_days - L) for h in hs]
    )
    target = float(np.mean(expit(z) * extend))
    return float(brentq(lambda d: float(np.mean(expit(z + d))) - target, -20.0, 20.0))


def fit_model(
    tx: Transactions,
    end: int,
    train_horizon_days: float,
    source: str = "",
    horizon_days: float | None = None,
) -> ChurnModel:
    """BG/NBD and Gamma-Gamma on the history up to ``end``; the risk model trained at the cut-off
    ``end - train_horizon_days`` (see the module docstring). Raises ValueError if there is no
    customer before the cut-off."""
    ids, hs = tx.histories(end)
    if not hs:
        raise ValueError("no purchase on or before the end date")
    bg = fit_bgnbd(hs)
    gg = fit_gamma_gamma(hs)
    cut = end - int(train_horizon_days)
    cut_ids, cut_hs = tx.histories(cut)
    if len(cut_hs) < 10:
        raise ValueError(f"only {len(cut_hs)} customers before the training cut-off")
    bg_cut = fit_bgnbd(cut_hs)
    horizon = float(horizon_days if horizon_days is not None else train_horizon_days)
    cut_model = ChurnModel(
        bgnbd=bg_cut.params,
        risk=RiskModel(train_horizon_days=float(train_horizon_days), horizon_days=horizon),
    )
    feats = feature_matrix(cut_model, cut_hs)
    churned = 1.0 - tx.bought_in(cut_ids, cut, end)
    rk = fit_risk(feats, churned)
    intercept, *coef = rk.params
    model = ChurnModel(
        bgnbd=bg.params,
        gamma_gamma=gg.params,
        risk=RiskModel(
            intercept=intercept,
            coef=tuple(coef),
            train_horizon_days=float(train_horizon_days),
            feature_means=tuple(float(v) for v in feats.mean(axis=0)),
            horizon_days=horizon,
        ),
    )
    shift = horizon_shift(model, hs, horizon)
    model = replace(model, risk=replace(model.risk, horizon_shift=shift))
    return replace(
        model,
        fit={
            "source": source,
            "end_day": end,
            "customers": len(hs),
            "repeat_buyers": sum(1 for h in hs if h.x > 0),
            "bgnbd": bg.report(),
            "gamma_gamma": gg.report(),
            "risk": {
                **rk.report(),
                "cutoff_day": cut,
                "training_customers": len(cut_hs),
                "training_churn_share": round(float(churned.mean()), 4),
                "bgnbd_at_cutoff": [round(v, 6) for v in vars_of(bg_cut.params)],
            },
        },
    )


def vars_of(p: BgNbd) -> tuple[float, float, float, float]:
    return (p.r, p.alpha_days, p.a, p.b)


# ------------------------------------------------------------------ evaluation metrics


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count one half); label 1 = positive (churned)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n1 = float(label.sum())
    n0 = len(label) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[label == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def calibration_table(pred: np.ndarray, label: np.ndarray, bins: int = 10) -> list[tuple]:
    """(low, high, customers, mean predicted, observed share) per equal-width bin of pred."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.minimum((pred * bins).astype(int), bins - 1)
    rows = []
    for i in range(bins):
        sel = idx == i
        n = int(sel.sum())
        rows.append(
            (
                float(edges[i]), float(edges[i + 1]), n,
                float(pred[sel].mean()) if n else float("nan"),
                float(label[sel].mean()) if n else float("nan"),
            )
        )
    return rows
