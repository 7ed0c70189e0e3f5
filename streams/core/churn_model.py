"""The churn model's parameters (the params file) and its closed-form BG/NBD and Gamma-Gamma
quantities, in pure Python (the worker evaluates them per event; no numpy on the hot path).

Time is measured in days throughout; purchases are counted on distinct purchase *days* (several
orders on one day are one transaction, as in Fader, Hardie and Lee 2005), x = repeat purchase
days (purchase days after the first), t_x = days from the first to the last purchase day,
T = days from the first purchase to the evaluation time.

The params file (JSON, ``CX_CHURN_PARAMS_PATH``, written by ``cxsignals churn fit``) holds a
:class:`ChurnModel` as ``{"version": 1, "bgnbd": {...}, "gamma_gamma": {...}, "risk": {...},
"clv": {...}, "fit": {...}}``. Without a file the worker uses :data:`PUBLISHED`: the parameters
Fader, Hardie and Lee (2005) and Fader and Hardie (2013) estimated on the CDNOW cohort sample,
and risk coefficients fitted by ``churn fit`` on the CDNOW master file (docs/scoring.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

PARAMS_VERSION = 1
DAYS_PER_YEAR: Final = 365.25
_P_MIN: Final = 1e-9  # probabilities are clamped to [_P_MIN, 1 - _P_MIN] before a logit


class ChurnParamsError(ValueError):
    """The params file is missing, not JSON, of another version, or has invalid values."""


@dataclass(frozen=True, slots=True)
class BgNbd:
    """BG/NBD population parameters; alpha in days (Fader, Hardie and Lee 2005, CDNOW sample:
    r = 0.243, alpha = 4.414 weeks = 30.90 days, a = 0.793, b = 2.426)."""

    r: float = 0.243
    alpha_days: float = 30.90
    a: float = 0.793
    b: float = 2.426


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Gamma-Gamma spend model (Fader and Hardie 2013, CDNOW sample, the 946 repeat buyers:
    p = 6.25, q = 3.74, gamma = 15.44, in the currency of the amounts)."""

    p: float = 6.25
    q: float = 3.74
    gamma: float = 15.44


# Names of the risk features, in the order of ``RiskModel.coef`` (after the intercept).
FEATURES: tuple[str, ...] = (
    "bgnbd_no_purchase_logit",  # logit of the BG/NBD P(no purchase in the training horizon)
    "log_repeat_days",  # log(1 + x)
    "recency_months",  # days since the last purchase / 30
    "log_spend",  # log(1 + total spend)
)
# Features that grow with the evaluation time for an idle customer: their coefficients are
# constrained to >= 0 in the fit, so the risk never falls while a customer stays quiet.
TIME_INCREASING: frozenset[str] = frozenset({"bgnbd_no_purchase_logit", "recency_months"})
# Features that a purchase raises: their coefficients are constrained to <= 0, so a purchase
# never raises the risk (the BG/NBD term falls with a purchase and the recency term resets).
PURCHASE_INCREASING: frozenset[str] = frozenset({"log_repeat_days", "log_spend"})


@dataclass(frozen=True, slots=True)
class RiskModel:
    """Logistic regression of "no purchase in the next ``train_horizon_days``" on FEATURES.

    ``feature_means``: the training population's means, the reference point of explanations.
    Defaults: ``cxsignals churn fit --transactions cdnow_master.csv --end 1997-09-30
    --horizon-days 90`` (training cut-off 1997-07-02; docs/scoring.md).
    """

    intercept: float = 1.8095
    coef: tuple[float, ...] = (0.3692, -0.5887, 0.1079, -0.2436)
    train_horizon_days: float = 90.0
    feature_means: tuple[float, ...] = (1.7375, 0.3489, 3.8039, 3.6205)
    # The horizon the risk is for, and the log-odds shift from the training horizon to it: the
    # shift that makes the population's mean risk equal to the BG/NBD chain-rule extension
    # P(none in L) * P_BG/NBD(none in (t + L, t + H] | none in (t, t + L]) (0 when H = L).
    horizon_days: float = 90.0
    horizon_shift: float = 0.0


@dataclass(frozen=True, slots=True)
class Clv:
    """Customer value over the next ``horizon_days``: BG/NBD expected purchase days x
    Gamma-Gamma expected spend per purchase day, discounted by ``annual_discount_rate`` with the
    mid-period convention (every purchase of the period is discounted by half the period)."""

    horizon_days: float = DAYS_PER_YEAR
    annual_discount_rate: float = 0.10


@dataclass(frozen=True, slots=True)
class ChurnModel:
    bgnbd: BgNbd = field(default_factory=BgNbd)
    gamma_gamma: GammaGamma = field(default_factory=GammaGamma)
    risk: RiskModel = field(default_factory=RiskModel)
    clv: Clv = field(default_factory=Clv)
    # What `churn fit` saw: data source, customers, log-likelihoods, convergence (informative).
    fit: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["risk"]["coef"] = list(self.risk.coef)
        d["risk"]["feature_means"] = list(self.risk.feature_means)
        d["risk"]["features"] = list(FEATURES)
        return json.dumps({"version": PARAMS_VERSION, **d}, indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")


PUBLISHED = ChurnModel()


def _positive(section: str, d: dict[str, Any], name: str) -> float:
    v = d.get(name)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise ChurnParamsError(f"{section}.{name} must be a positive number, got {v!r}")
    return float(v)


def _floats(section: str, d: dict[str, Any], name: str, n: int) -> tuple[float, ...]:
    v = d.get(name)
    if not (isinstance(v, list) and len(v) == n and all(isinstance(c, (int, float)) for c in v)):
        raise ChurnParamsError(f"{section}.{name} must be a list of {n} numbers, got {v!r}")
    return tuple(float(c) for c in v)


def parse_churn_model(raw: Any, source: str = "<params>") -> ChurnModel:
    """Validate a decoded params document. Raises ChurnParamsError naming the field."""
    try:
        if not isinstance(raw, dict) or raw.get("version") != PARAMS_VERSION:
            got = raw.get("version") if isinstance(raw, dict) else raw
            raise ChurnParamsError(f"version must be {PARAMS_VERSION}, got {got!r}")
        bg, gg, rk = raw.get("bgnbd"), raw.get("gamma_gamma"), raw.get("risk")
        cl = raw.get("clv", {})
        for name, sec in (("bgnbd", bg), ("gamma_gamma", gg), ("risk", rk), ("clv", cl)):
            if not isinstance(sec, dict):
                raise ChurnParamsError(f"{name} must be an object")
        assert isinstance(bg, dict) and isinstance(gg, dict) and isinstance(rk, dict)
        if rk.get("features", list(FEATURES)) != list(FEATURES):
            raise ChurnParamsError(f"risk.features must be {list(FEATURES)}")
        intercept = rk.get("intercept")
        if not isinstance(intercept, (int, float)):
            raise ChurnParamsError(f"risk.intercept must be a number, got {intercept!r}")
        coef = _floats("risk", rk, "coef", len(FEATURES))
        for name, c in zip(FEATURES, coef, strict=True):
            if name in TIME_INCREASING and c < 0:
                raise ChurnParamsError(f"risk.coef of {name} must be >= 0 (monotone in time)")
            if name in PURCHASE_INCREASING and c > 0:
                raise ChurnParamsError(f"risk.coef of {name} must be <= 0 (monotone in purchases)")
        rate = cl.get("annual_discount_rate", 0.10)
        if not isinstance(rate, (int, float)) or rate < 0:
            raise ChurnParamsError(f"clv.annual_discount_rate must be >= 0, got {rate!r}")
        return ChurnModel(
            bgnbd=BgNbd(*(_positive("bgnbd", bg, n) for n in ("r", "alpha_days", "a", "b"))),
            gamma_gamma=GammaGamma(*(_positive("gamma_gamma", gg, n) for n in ("p", "q", "gamma"))),
            risk=RiskModel(
                intercept=float(intercept),
                coef=coef,
                train_horizon_days=_positive("risk", rk, "train_horizon_days"),
                feature_means=_floats("risk", rk, "feature_means", len(FEATURES)),
                horizon_days=_positive("risk", rk, "horizon_days"),
                horizon_shift=float(rk.get("horizon_shift", 0.0)),
            ),
            clv=Clv(
                horizon_days=_positive("clv", {**asdict(Clv()), **cl}, "horizon_days"),
                annual_discount_rate=float(rate),
            ),
            fit=dict(raw["fit"]) if isinstance(raw.get("fit"), dict) else {},
        )
    except ChurnParamsError as exc:
        raise ChurnParamsError(f"invalid churn params {source}: {exc}") from None


def load_churn_model(path: Path | None) -> ChurnModel:
    """The params file at ``path``, or :data:`PUBLISHED` for None. Raises ChurnParamsError."""
    if path is None:
        return PUBLISHED
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChurnParamsError(f"cannot read churn params {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ChurnParamsError(f"churn params {path} is not valid JSON: {exc}") from None
    return parse_churn_model(raw, str(path))


# ------------------------------------------------------------------ closed forms (pure Python)


def p_alive(m: BgNbd, x: int, t_x: float, big_t: float) -> float:
    """BG/NBD P(alive | x, t_x, T); 1 for x = 0 (dropping out happens only after a purchase)."""
    if x <= 0:
        return 1.0
    log_term = math.log(m.a / (m.b + x - 1)) + (m.r + x) * math.log(
        (m.alpha_days + big_t) / (m.alpha_days + t_x)
    )
    return 0.0 if log_term > 700.0 else 1.0 / (1.0 + math.exp(log_term))


def p_no_purchase(m: BgNbd, x: int, t_x: float, big_t: float, h_days: float) -> float:
    """BG/NBD P(no purchase in (T, T + h] | x, t_x, T).

    = 1 - P(alive) * (1 - ((alpha + T) / (alpha + T + h)) ** (r + x)): a customer alive at T
    with rate lambda ~ Gamma(r + x, alpha + T) makes no purchase with probability exp(-lambda h)
    (dropping out only happens right after a purchase). Non-decreasing in T for fixed x, t_x.
    """
    alive = p_alive(m, x, t_x, big_t)
    at = m.alpha_days + big_t
    stay_quiet = math.exp((m.r + x) * math.log(at / (at + h_days)))
    return 1.0 - alive * (1.0 - stay_quiet)


def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss hypergeometric 2F1(a, b; c; z) for 0 <= z < 1, to a relative 1e-10.

    Summed as Euler's transform (1 - z) ** (c - a - b) * 2F1(c - a, c - b; c; z): for the BG/NBD
    arguments (a = r + x, b = b + x, c = a + b + x - 1) its terms shrink like n ** (c - a - b - 1)
    * z ** n instead of n ** (a + b - c - 1) * z ** n, i.e. much faster for frequent buyers.
    """
    a2, b2 = c - a, c - b
    term = total = 1.0
    n = 0
    while n < 100_000:
        term *= (a2 + n) * (b2 + n) / ((c + n) * (n + 1)) * z
        total += term
        n += 1
        if abs(term) < 1e-10 * abs(total):
            break
    return total * (1.0 - z) ** (c - a - b)


def expected_purchases(m: BgNbd, x: int, t_x: float, big_t: float, t_days: float) -> float:
    """BG/NBD E[purchase days in (T, T + t] | x, t_x, T] (Fader, Hardie and Lee 2005, eq. 10)."""
    r, alpha, a, b = m.r, m.alpha_days, m.a, m.b
    if a == 1.0:  # the formula's removable singularity
        a = 1.0 + 1e-9
    at = alpha + big_t
    z = t_days / (at + t_days)
    f = hyp2f1(r + x, b + x, a + b + x - 1.0, z)
    num = (a + b + x - 1.0) / (a - 1.0) * (1.0 - (at / (at + t_days)) ** (r + x) * f)
    if x > 0:
        num /= 1.0 + a / (b + x - 1.0) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
    return num


def expected_spend(g: GammaGamma, x: int, mean_spend: float) -> float:
    """Gamma-Gamma E[spend per purchase day | x repeat days with mean ``mean_spend``];
    the population mean p * gamma / (q - 1) for x = 0."""
    p, q, gamma = g.p, g.q, g.gamma
    if q <= 1.0:
        return mean_spend if x > 0 else 0.0
    return (gamma * p + p * x * mean_spend) / (p * x + q - 1.0)


def clv(model: ChurnModel, x: int, t_x: float, big_t: float, mean_spend: float) -> float:
    """Discounted expected spend over the next ``model.clv.horizon_days`` (see :class:`Clv`)."""
    c = model.clv
    n = expected_purchases(model.bgnbd, x, t_x, big_t, c.horizon_days)
    discount = (1.0 + c.annual_discount_rate) ** (-0.5 * c.horizon_days / DAYS_PER_YEAR)
    return n * expected_spend(model.gamma_gamma, x, mean_spend) * discount


def logit(p: float) -> float:
    p = _P_MIN if p < _P_MIN else (1.0 - _P_MIN if p > 1.0 - _P_MIN else p)
    return math.log(p / (1.0 - p))
