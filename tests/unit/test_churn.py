"""Churn risk: BG/NBD probability alive and the experience adjustments."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from streams.core.churn import BgNbdParams, ChurnAdjustments, ChurnScorer
from streams.core.state import CustomerState
from streams.core.windows import DAY_S, WEEK_S

P = BgNbdParams()
ADJ = ChurnAdjustments()
T0 = 1_714_996_800.0
# No adjustment: the risk is the BG/NBD base, 1 - P(alive).
NO_ADJ = ChurnAdjustments(
    low_score=0.0, negative_answer=0.0, unresolved_each=0.0, falling_trend=0.0
)
churn_risk = ChurnScorer(P, ADJ)
base_risk = ChurnScorer(P, NO_ADJ)


def p_alive(x: int, t_x: float, age: float) -> float:
    """P(alive) after x repeat purchases, the last at t_x, at customer age ``age`` (weeks)."""
    st = CustomerState(
        watermark=T0 + age * WEEK_S,
        first_seen=T0,
        purchases=x + 1,
        first_purchase=T0,
        last_purchase=T0 + t_x * WEEK_S,
    )
    return 1.0 - base_risk(st, 50.0)


def paper_p_alive(x: int, t_x: float, big_t: float) -> float:
    """Fader, Hardie & Lee (2005), eq. for P(alive) written out directly, x >= 1."""
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    return 1 / (1 + (a / (b + x - 1)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))


@pytest.mark.parametrize(("x", "t_x", "big_t"), [(1, 1.0, 30.0), (2, 10.0, 38.0), (7, 35.0, 39.0)])
def test_p_alive_matches_the_paper_for_repeat_buyers(x: int, t_x: float, big_t: float) -> None:
    assert p_alive(x, t_x, big_t) == pytest.approx(paper_p_alive(x, t_x, big_t), rel=1e-12)


def test_p_alive_for_no_repeat_uses_the_x1_coefficient() -> None:
    assert p_alive(0, 0.0, 0.0) == pytest.approx(1 / (1 + P.a / P.b))
    assert p_alive(0, 0.0, 52.0) < p_alive(0, 0.0, 1.0)  # decays with age


def test_p_alive_does_not_overflow() -> None:
    assert p_alive(5000, 0.0, 500.0) == 0.0
    assert 0 < p_alive(5000, 500.0, 500.0) < 1


def _buyer(purchase_weeks: Sequence[float], now_week: float) -> CustomerState:
    st = CustomerState(watermark=T0 + now_week * WEEK_S, first_seen=T0)
    if purchase_weeks:
        st.purchases = len(purchase_weeks)
        st.first_purchase = T0 + min(purchase_weeks) * WEEK_S
        st.last_purchase = T0 + max(purchase_weeks) * WEEK_S
    return st


def test_base_risk_rises_with_time_since_last_purchase() -> None:
    risks = [base_risk(_buyer([0, 1, 2], 2 + gap), 50.0) for gap in (0, 2, 8, 30)]
    assert risks == sorted(risks) and risks[-1] > 0.6


def test_a_purchase_at_the_watermark_never_raises_base_risk() -> None:
    for history, now in [([], 10.0), ([0], 10.0), ([0, 3], 10.0), ([0, 1, 2, 3, 4], 40.0)]:
        before = base_risk(_buyer(history, now), 50.0)
        after = base_risk(_buyer([*history, now], now), 50.0)
        assert after <= before + 1e-12, (history, now)


def test_adjustments_raise_risk() -> None:
    st = _buyer([0, 1], 2)
    base = churn_risk(st, 50.0)
    assert churn_risk(st, 20.0) > base  # low experience
    assert churn_risk(st, 80.0) == pytest.approx(base)  # only low scores add risk
    neg = _buyer([0, 1], 2)
    neg.last_negative = neg.watermark
    assert churn_risk(neg, 50.0) > base
    unresolved = _buyer([0, 1], 2)
    assert unresolved.watermark is not None
    unresolved.contacts = [(unresolved.watermark - 60, False, "e", "t", "r")]
    assert churn_risk(unresolved, 50.0) > base


def test_falling_activity_trend_raises_risk_rising_does_not() -> None:
    now = T0 + 60 * DAY_S

    def with_activity(recent: int, previous: int) -> float:
        st = CustomerState(
            watermark=now, first_seen=T0, purchases=1, first_purchase=now, last_purchase=now
        )
        daily = st.activity_daily
        for i in range(recent):
            day = int((now - (i % 7) * DAY_S) // DAY_S)
            daily[day] = daily.get(day, 0.0) + 1.0
        for i in range(previous):
            day = int((now - (7 + i % 28) * DAY_S) // DAY_S)
            daily[day] = daily.get(day, 0.0) + 1.0
        return churn_risk(st, 50.0)

    steady = with_activity(5, 20)
    assert with_activity(0, 20) > with_activity(2, 20) > steady
    assert with_activity(9, 20) == pytest.approx(steady)
    assert with_activity(0, 3) == pytest.approx(with_activity(5, 3))  # too little baseline


def test_risk_is_a_probability() -> None:
    st = _buyer([0, 1, 2, 3], 200)
    st.last_negative = st.watermark
    r = churn_risk(st, 0.0)
    assert 0.0 <= r <= 1.0 and not math.isnan(r)
