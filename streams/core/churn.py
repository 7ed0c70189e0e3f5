"""Churn risk (0-1): a BG/NBD probability-alive base adjusted by the customer's experience.

Base: ``1 - P(alive)`` of the BG/NBD model (Fader, Hardie and Lee, 2005, "Counting your customers
the easy way"), with population parameters r, alpha, a, b estimated on CDNOW *in weeks*:

    P(alive | x, t_x, T) = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))

x = repeat purchases (purchases after the first), t_x = time of the last purchase and T = the
customer's age, both measured from the first purchase, in weeks (``time_unit_s``). T is taken at
the customer's watermark (event time), never the wall clock, so a replay gives the same risk.

Two documented departures keep the risk monotone (a purchase never raises it):
* BG/NBD says P(alive) = 1 when x = 0 (a customer can only drop out after a repeat purchase),
  so the second purchase would *raise* the risk from 0 to a/(a+b). For x = 0 we use the x = 1
  coefficient a / b (as the MBG/NBD variant does), so the risk decays from a/(a+b) with age.
* A customer who never bought is aged from the first event seen (as if that were the trial).

Adjustments, combined as independent hazards ``risk = 1 - (1 - base) * prod(1 - adj)``:
low experience score, a recent detractor-like answer, unresolved support contacts, and a falling
activity trend (last 7 days vs the weekly average of the 28 days before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streams.core.state import CustomerState
from streams.core.windows import DAY_S, WEEK_S


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """Population parameters; defaults are Fader/Hardie/Lee (2005) on CDNOW, unit = one week."""

    r: float = 0.243
    alpha: float = 4.414
    a: float = 0.793
    b: float = 2.426
    time_unit_s: float = WEEK_S


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


class ChurnScorer:
    """Churn risk in [0, 1] at a state's watermark, for an experience score (the module
    docstring gives the model); the parameter-only products are computed once.

    Monotone: non-increasing in the score, in recent activity and in purchases made at the
    watermark; non-decreasing in unresolved contacts and negative answers.
    """

    __slots__ = (
        "_a",
        "_b",
        "_r",
        "_alpha",
        "_unit",
        "_low_score",
        "_neg_window_s",
        "_neg_keep",
        "_unresolved_window_s",
        "_unresolved_each",
        "_unresolved_max",
        "_falling_trend",
        "_trend_min_baseline",
    )

    def __init__(self, p: BgNbdParams, adj: ChurnAdjustments) -> None:
        self._a, self._b, self._r, self._alpha, self._unit = p.a, p.b, p.r, p.alpha, p.time_unit_s
        self._low_score = adj.low_score
        self._neg_window_s = adj.negative_window_days * DAY_S
        self._neg_keep = 1.0 - adj.negative_answer
        self._unresolved_window_s = adj.unresolved_window_days * DAY_S
        self._unresolved_each = adj.unresolved_each
        self._unresolved_max = adj.unresolved_max
        self._falling_trend = adj.falling_trend
        self._trend_min_baseline = adj.trend_min_baseline

    def __call__(self, state: CustomerState, score: float, at_s: float | None = None) -> float:
        """The churn risk of ``state`` for experience score ``score`` as of ``at_s`` (epoch
        seconds; default and minimum: the state's watermark). Risk is a function of the
        evaluation time: an idle customer's risk is re-evaluated with a later ``at_s``."""
        w = state.watermark
        assert w is not None
        if at_s is not None and at_s > w:
            w = at_s
        # base risk: 1 - P(alive) of BG/NBD
        unit = self._unit
        first_purchase = state.first_purchase
        last_purchase = state.last_purchase
        if state.purchases and first_purchase is not None and last_purchase is not None:
            birth = first_purchase
            x = state.purchases - 1
            t_x = (last_purchase - birth) / unit
        else:
            first_seen = state.first_seen
            birth = first_seen if first_seen is not None else w
            x, t_x = 0, 0.0
        age = (w - birth) / unit
        if t_x > age:  # max(age, t_x)
            age = t_x
        alpha = self._alpha
        coef = self._a / (self._b + (x - 1 if x > 1 else 0))
        log_term = math.log(coef) + (self._r + x) * math.log((alpha + age) / (alpha + t_x))
        alive = 0.0 if log_term > 700 else 1.0 / (1.0 + math.exp(log_term))
        keep = 1.0 - (1.0 - alive)
        # adjustments (each skipped when its factor is exactly 1)
        if score < 50.0:
            keep *= 1.0 - self._low_score * ((50.0 - score) / 50.0)
        neg = state.last_negative
        if neg is not None and w - neg <= self._neg_window_s:
            keep *= self._neg_keep
        contacts = state.contacts
        if contacts:
            horizon = w - self._unresolved_window_s
            open_n = 0
            for c in contacts:
                if c[0] >= horizon and not c[1]:
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
        risk = 1.0 - keep
        # min(1.0, max(0.0, risk))
        if risk >= 1.0:
            return 1.0
        return risk if risk > 0.0 else 0.0
