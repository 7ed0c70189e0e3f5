"""Churn risk (0-1): P(no purchase in (t, t + horizon]) given the customer's history as of t.

The model (docs/scoring.md, "Churn risk"; parameters in :mod:`streams.core.churn_model`):

1. Purchase-behaviour features as of the evaluation time t, on distinct purchase days, in days:
   x = repeat purchase days, recency = t - last purchase, T = t - first purchase, total spend,
   and the BG/NBD P(no purchase in (t, t + L]) for the training horizon L.
2. A logistic regression on those features gives P(no purchase in (t, t + L]). It is fitted by
   ``cxsignals churn fit`` on an earlier cut-off of the same history (t' = end - L), where the
   outcome is known, so it is calibrated on the tenant's own customers.
3. A horizon H longer than L adds a constant log-odds shift (fitted: the population's mean risk
   then equals the BG/NBD chain-rule extension P(none in L) * P_BG/NBD(none in (t + L, t + H] |
   none in (t, t + L])). The params file is fitted for one horizon; another is refused.
4. Experience adjustments (low experience score, a recent detractor-like answer, unresolved
   support contacts, a falling activity trend) are independent hazards on top:
   ``risk = 1 - (1 - purchase risk) * prod(1 - adj)``. Purchase history cannot identify their
   size, so they are documented priors (:class:`ChurnAdjustments`), not fitted; their windows are
   measured at the customer's watermark (the last event), so they hold while a customer is idle.

Guarantees (tests/unit/test_churn.py): a pure function of (state, score, at_s); for a customer
with no new events the risk is non-decreasing in ``at_s`` (the coefficients of the features that
grow with time are constrained to >= 0 by the fit, the BG/NBD terms grow with T, the adjustments
are frozen at the watermark); a purchase never raises it; ``at_s`` is event time, never the wall
clock, so a replay gives the same risk.

A customer who never bought is aged from the first event seen (as if that were a first purchase
with no spend), so the risk of a visitor rises as the visits stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from streams.core.churn_model import (
    DAYS_PER_YEAR,
    FEATURES,
    PUBLISHED,
    ChurnModel,
    ChurnParamsError,
    expected_purchases,
    expected_spend,
    p_no_purchase,
)
from streams.core.rounding import round_to
from streams.core.state import CustomerState
from streams.core.windows import DAY_S

_P_MIN: Final = 1e-9
_CLV_CACHE_MAX: Final = 65_536


def _logit(p: float) -> float:
    p = _P_MIN if p < _P_MIN else (1.0 - _P_MIN if p > 1.0 - _P_MIN else p)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True, slots=True)
class ChurnAdjustments:
    low_score: float = 0.4  # at experience score 0; linear to 0 at score 50
    negative_answer: float = 0.15  # a detractor-like answer within negative_window_days
    negative_window_days: float = 30.0
    unresolved_each: float = 0.1  # per unresolved contact within unresolved_window_days
    unresolved_max: float = 0.3
    unresolved_window_days: float = 7.0
    falling_trend: float = 0.25  # when the last 7 days had no activity at all
    trend_min_baseline: float = 4.0  # events in the previous 28 days needed to judge a trend


class PurchaseHistory:
    """The BG/NBD summary of a state as of a time (days; see churn_model's docstring).

    Read-only by convention. A plain class rather than a dataclass: built on every churn
    evaluation, and a compiled dataclass still runs the interpreted ``__init__`` that
    ``dataclasses`` generates.
    """

    __slots__ = ("x", "t_x", "big_t", "spend", "mean_repeat_spend")

    def __init__(self, x: int, t_x: float, big_t: float, spend: float,
                 mean_repeat_spend: float) -> None:
        self.x = x  # repeat purchase days
        self.t_x = t_x  # first to last purchase, days
        self.big_t = big_t  # first purchase to the evaluation time, days
        self.spend = spend  # total spend
        self.mean_repeat_spend = mean_repeat_spend  # mean spend of the repeat purchase days


def purchase_history(state: CustomerState, at_s: float | None = None) -> PurchaseHistory:
    """The purchase summary of ``state`` as of ``at_s`` (default and minimum: its watermark)."""
    w = state.watermark
    assert w is not None
    if at_s is not None and at_s > w:
        w = at_s
    first, last = state.first_purchase, state.last_purchase
    if state.purchases and first is not None and last is not None:
        days = state.purchase_days or state.purchases  # states written before purchase_days
        x = days - 1
        t_x = (last - first) / DAY_S
        repeat_spend = state.spend - (state.first_day_spend if state.purchase_days else 0.0)
        mean = repeat_spend / x if x > 0 and state.purchase_days else (
            state.spend / days if x > 0 else 0.0
        )
        return PurchaseHistory(x, t_x, max((w - first) / DAY_S, t_x), state.spend, mean)
    birth = state.first_seen if state.first_seen is not None else w
    return PurchaseHistory(0, 0.0, (w - birth) / DAY_S, 0.0, 0.0)


class ChurnScorer:
    """Churn risk in [0, 1] of a state as of an evaluation time, for an experience score.

    Called per event on the hot path: plain floats and ``math`` only, the parameter-only
    constants computed once here.
    """

    __slots__ = (
        "model",
        "horizon_days",
        "_bg",
        "_r",
        "_alpha",
        "_a",
        "_b",
        "_w0",
        "_w_p0",
        "_w_x",
        "_w_rec",
        "_w_spend",
        "_train_h",
        "_low_score",
        "_neg_window_s",
        "_neg_keep",
        "_unresolved_window_s",
        "_unresolved_each",
        "_unresolved_max",
        "_falling_trend",
        "_trend_min_baseline",
        "_clv_cache",
        "_clv_discount",
    )

    def __init__(
        self,
        model: ChurnModel = PUBLISHED,
        adj: ChurnAdjustments | None = None,
        horizon_days: float | None = None,
    ) -> None:
        adj = adj if adj is not None else ChurnAdjustments()
        horizon_days = model.risk.horizon_days if horizon_days is None else horizon_days
        self.model = model
        self.horizon_days = horizon_days
        self._bg = bg = model.bgnbd
        self._r, self._alpha, self._a, self._b = bg.r, bg.alpha_days, bg.a, bg.b
        rk = model.risk
        self._w0 = rk.intercept
        self._w_p0, self._w_x, self._w_rec, self._w_spend = rk.coef
        if horizon_days != rk.horizon_days:
            raise ChurnParamsError(
                f"the churn params were fitted for a {rk.horizon_days:g}-day horizon, not "
                f"{horizon_days:g} days: refit (cxsignals churn fit --horizon-days "
                f"{horizon_days:g}) or set CX_CHURN_HORIZON_DAYS={rk.horizon_days:g}"
            )
        self._train_h = rk.train_horizon_days
        self._w0 = rk.intercept + rk.horizon_shift  # logistic part at the training horizon
        self._low_score = adj.low_score
        self._neg_window_s = adj.negative_window_days * DAY_S
        self._neg_keep = 1.0 - adj.negative_answer
        self._unresolved_window_s = adj.unresolved_window_days * DAY_S
        self._unresolved_each = adj.unresolved_each
        self._unresolved_max = adj.unresolved_max
        self._falling_trend = adj.falling_trend
        self._trend_min_baseline = adj.trend_min_baseline
        self._clv_cache: dict[tuple[int, float, float], float] = {}
        c = model.clv
        self._clv_discount = (1.0 + c.annual_discount_rate) ** (
            -0.5 * c.horizon_days / DAYS_PER_YEAR
        )

    # ------------------------------------------------------------------ the risk

    def features(self, h: PurchaseHistory) -> tuple[float, float, float, float]:
        """The FEATURES of a purchase history, in order."""
        p0 = p_no_purchase(self._bg, h.x, h.t_x, h.big_t, self._train_h)
        p0 = _P_MIN if p0 < _P_MIN else (1.0 - _P_MIN if p0 > 1.0 - _P_MIN else p0)
        return (
            math.log(p0 / (1.0 - p0)),
            math.log1p(h.x),
            (h.big_t - h.t_x) / 30.0,
            math.log1p(h.spend),
        )

    def purchase_risk(self, h: PurchaseHistory) -> float:
        """P(no purchase within the horizon) from purchase behaviour alone."""
        f_p0, f_x, f_rec, f_spend = self.features(h)
        z = (
            self._w0
            + self._w_p0 * f_p0
            + self._w_x * f_x
            + self._w_rec * f_rec
            + self._w_spend * f_spend
        )
        return 1.0 / (1.0 + math.exp(-z)) if z > -700.0 else 0.0

    def experience_keep(self, state: CustomerState, score: float) -> float:
        """prod(1 - adjustment) of the experience hazards, measured at the watermark."""
        w = state.watermark
        assert w is not None
        keep = 1.0
        if score < 50.0:
            keep *= 1.0 - self._low_score * ((50.0 - score) / 50.0)
        neg = state.last_negative
        if neg is not None and w - neg <= self._neg_window_s:
            keep *= self._neg_keep
        contacts: list[Any] = state.contacts  # indexed, not unpacked field by field
        if contacts:
            since = w - self._unresolved_window_s
            open_n = 0
            for c in contacts:
                if c[0] >= since and not c[1]:
                    open_n += 1
            if open_n:
                keep *= 1.0 - min(self._unresolved_max, self._unresolved_each * open_n)
        daily = state.activity_daily
        if daily:
            today = int(w // DAY_S)
            recent = previous = 0.0
            for day, n in daily.items():
                age_d = today - day
                if 0 <= age_d <= 6:
                    recent += n
                elif 7 <= age_d <= 34:
                    previous += n
            if previous >= self._trend_min_baseline:
                expected = previous / 4.0
                if recent < expected:
                    keep *= 1.0 - self._falling_trend * (1.0 - recent / expected)
        return keep

    def __call__(self, state: CustomerState, score: float, at_s: float | None = None) -> float:
        """The churn risk of ``state`` for experience score ``score`` as of ``at_s`` (epoch
        seconds; default and minimum: the state's watermark). Non-decreasing in ``at_s``.

        ``purchase_risk(purchase_history(state, at_s))`` written inline (this runs per event;
        tests/unit/test_churn.py checks that both give the same risk).
        """
        w = state.watermark
        assert w is not None
        if at_s is not None and at_s > w:
            w = at_s
        first = state.first_purchase
        last = state.last_purchase
        if state.purchases and first is not None and last is not None:
            x = (state.purchase_days or state.purchases) - 1
            t_x = (last - first) / DAY_S
            big_t = (w - first) / DAY_S
            if big_t < t_x:
                big_t = t_x
            spend = state.spend
        else:
            first_seen = state.first_seen
            x, t_x, spend = 0, 0.0, 0.0
            big_t = (w - first_seen) / DAY_S if first_seen is not None else 0.0
        # BG/NBD P(no purchase in the training horizon), as p_no_purchase computes it
        rx = self._r + x
        at = self._alpha + big_t
        quiet = (at / (at + self._train_h)) ** rx
        if x > 0:
            try:
                alive = 1.0 / (1.0 + self._a / (self._b + x - 1) * (at / (self._alpha + t_x)) ** rx)
            except OverflowError:  # thousands of purchase days, the last long ago
                alive = 0.0
            p0 = 1.0 - alive * (1.0 - quiet)
        else:
            p0 = 1.0 - (1.0 - quiet)
        p0 = _P_MIN if p0 < _P_MIN else (1.0 - _P_MIN if p0 > 1.0 - _P_MIN else p0)
        z = self._w0 + self._w_p0 * math.log(p0 / (1.0 - p0)) + self._w_rec * ((big_t - t_x) / 30.0)
        if x:
            z += self._w_x * math.log1p(x)
        if spend:
            z += self._w_spend * math.log1p(spend)
        purchase_risk = 1.0 / (1.0 + math.exp(-z)) if z > -700.0 else 0.0
        risk = 1.0 - (1.0 - purchase_risk) * self.experience_keep(state, score)
        if risk >= 1.0:
            return 1.0
        return risk if risk > 0.0 else 0.0

    # ------------------------------------------------------------------ value and explanation

    def clv(self, state: CustomerState, at_s: float | None = None) -> float:
        """Expected discounted spend over the model's CLV horizon (12 months by default); 0 for
        a customer who never bought.

        The BG/NBD expectation (a hypergeometric series, up to a few hundred terms for young
        customers) is memoised per (x, t_x, T) rounded to 0.1 day, in a bounded dict.
        """
        if state.purchases == 0:
            return 0.0
        h = purchase_history(state, at_s)
        key = (h.x, round_to(h.t_x, 1), round_to(h.big_t, 1))
        cache = self._clv_cache
        n = cache.get(key)
        if n is None:
            if len(cache) >= _CLV_CACHE_MAX:
                cache.clear()
            c = self.model.clv
            n = cache[key] = expected_purchases(self._bg, key[0], key[1], key[2], c.horizon_days)
        return n * expected_spend(self.model.gamma_gamma, h.x, h.mean_repeat_spend) * (
            self._clv_discount
        )

    def drivers(
        self, state: CustomerState, score: float, at_s: float | None = None
    ) -> list[dict[str, object]]:
        """What moved this customer's risk away from the average customer's, largest first.

        Each driver: ``name``, ``log_odds`` (its signed contribution to the log-odds of the
        purchase risk, relative to the training population's mean feature), ``value`` and
        ``evidence`` (event ids behind it). The experience hazards follow as ``log_odds`` of
        their combined factor, with the signal events of the state as evidence.
        """
        h = purchase_history(state, at_s)
        values = self.features(h)
        rk = self.model.risk
        last = [state.last_purchase_id] if state.last_purchase_id else []
        shown = {
            "bgnbd_no_purchase_logit": round(
                p_no_purchase(self._bg, h.x, h.t_x, h.big_t, self._train_h), 4
            ),
            "log_repeat_days": h.x,
            "recency_months": round((h.big_t - h.t_x) / 30.0, 2),
            "log_spend": round(h.spend, 2),
        }
        out: list[dict[str, object]] = [
            {
                "name": name,
                "log_odds": round(c * (v - m), 4),
                "value": shown[name],
                "evidence": last,
            }
            for name, c, v, m in zip(FEATURES, rk.coef, values, rk.feature_means, strict=True)
        ]
        keep = self.experience_keep(state, score)
        if keep < 1.0:
            pr = self.purchase_risk(h)
            total = 1.0 - (1.0 - pr) * keep
            out.append(
                {
                    "name": "experience",
                    "log_odds": round(_logit(total) - _logit(pr), 4),
                    "value": round(score, 2),
                    "evidence": state.signals.negative_ids()[-5:],
                }
            )
        out.sort(key=lambda d: -abs(float(d["log_odds"])))  # type: ignore[arg-type]
        return out
