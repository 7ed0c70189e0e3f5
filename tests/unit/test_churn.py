"""Churn risk: the BG/NBD closed forms, the scorer's guarantees, the params file, explanations."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from scipy.special import hyp2f1 as scipy_hyp2f1

from streams.core.churn import ChurnAdjustments, ChurnScorer, purchase_history
from streams.core.churn_model import (
    PUBLISHED,
    BgNbd,
    ChurnParamsError,
    clv,
    expected_purchases,
    hyp2f1,
    load_churn_model,
    p_alive,
    p_no_purchase,
    parse_churn_model,
)
from streams.core.kept_signals import KeptSignals
from streams.core.state import CustomerState
from streams.core.windows import DAY_S

BG = BgNbd()
T0 = 1_714_996_800.0
NO_ADJ = ChurnAdjustments(
    low_score=0.0, negative_answer=0.0, unresolved_each=0.0, falling_trend=0.0
)
churn_risk = ChurnScorer(PUBLISHED, ChurnAdjustments())
base_risk = ChurnScorer(PUBLISHED, NO_ADJ)


def paper_p_alive(x: int, t_x: float, big_t: float) -> float:
    """Fader, Hardie and Lee (2005), P(alive) written out with their weekly parameters."""
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    return 1 / (1 + (a / (b + x - 1)) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))


@pytest.mark.parametrize(("x", "t_x", "big_t"), [(1, 1.0, 30.0), (2, 10.0, 38.0), (7, 35.0, 39.0)])
def test_p_alive_matches_the_paper(x: int, t_x: float, big_t: float) -> None:
    weeks = BgNbd(0.243, 4.414, 0.793, 2.426)
    assert p_alive(weeks, x, t_x, big_t) == pytest.approx(paper_p_alive(x, t_x, big_t))
    # the same customer in days, with alpha in days
    days = BgNbd(0.243, 4.414 * 7, 0.793, 2.426)
    assert p_alive(days, x, t_x * 7, big_t * 7) == pytest.approx(paper_p_alive(x, t_x, big_t))


def test_p_no_purchase_closed_form() -> None:
    # x = 0: alive for sure, P(0) = E[exp(-lambda h)] with lambda ~ Gamma(r, alpha + T)
    assert p_no_purchase(BG, 0, 0.0, 10.0, 90.0) == pytest.approx(
        ((BG.alpha_days + 10) / (BG.alpha_days + 100)) ** BG.r
    )
    # x > 0: 1 - P(alive) (1 - P(0 | alive)); a zero horizon has no purchase
    assert p_no_purchase(BG, 3, 20.0, 50.0, 0.0) == pytest.approx(1.0)
    pa = p_alive(BG, 3, 20.0, 50.0)
    quiet = ((BG.alpha_days + 50) / (BG.alpha_days + 140)) ** (BG.r + 3)
    assert p_no_purchase(BG, 3, 20.0, 50.0, 90.0) == pytest.approx(1 - pa * (1 - quiet))


@pytest.mark.parametrize(("a", "b", "c", "z"), [(0.3, 2.5, 3.2, 0.1), (5.2, 9.4, 12.1, 0.9)])
def test_hyp2f1_matches_scipy(a: float, b: float, c: float, z: float) -> None:
    assert hyp2f1(a, b, c, z) == pytest.approx(float(scipy_hyp2f1(a, b, c, z)), rel=1e-9)


def test_expected_purchases_of_a_new_customer_is_the_bgnbd_mean() -> None:
    """For x = 0, T = 0 the conditional expectation is the unconditional E[X(t)] (eq. 9)."""
    r, alpha, a, b = BG.r, BG.alpha_days, BG.a, BG.b
    t = 365.0
    hyp = float(scipy_hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    unconditional = (a + b - 1) / (a - 1) * (1 - (alpha / (alpha + t)) ** r * hyp)
    assert expected_purchases(BG, 0, 0.0, 0.0, t) == pytest.approx(unconditional)


def _buyer(purchase_days: Sequence[float], now_day: float, spend: float = 50.0) -> CustomerState:
    st = CustomerState(watermark=T0 + now_day * DAY_S, first_seen=T0)
    if purchase_days:
        st.purchases = st.purchase_days = len(purchase_days)
        st.first_purchase = T0 + min(purchase_days) * DAY_S
        st.last_purchase = T0 + max(purchase_days) * DAY_S
        st.last_purchase_id = "p-last"
        st.spend = spend * len(purchase_days)
        st.first_day_spend = spend
    return st


def _number(value: object) -> float:
    assert isinstance(value, (int, float)), value
    return float(value)


def _random_state(rng: random.Random) -> CustomerState:
    n = rng.randint(0, 6)
    days = sorted(rng.uniform(0, 300) for _ in range(n))
    st = _buyer(days, (days[-1] if days else 0) + rng.uniform(0, 60), rng.uniform(1, 500))
    w = st.watermark
    assert w is not None
    if rng.random() < 0.3:
        st.last_negative = w - rng.uniform(0, 40) * DAY_S
    if rng.random() < 0.3:
        st.contacts = [(w - rng.uniform(0, 8) * DAY_S, False, "e", "c", "r")]
    if rng.random() < 0.3:
        for i in range(rng.randint(0, 12)):
            day = int((w - rng.uniform(0, 34) * DAY_S) // DAY_S)
            st.activity_daily[day] = st.activity_daily.get(day, 0.0) + 1.0 + i * 0
    return st


def test_risk_of_an_idle_customer_never_falls_as_time_passes() -> None:
    rng = random.Random(7)
    scorers = [churn_risk, ChurnScorer(replace(PUBLISHED, risk=replace(
        PUBLISHED.risk, horizon_days=273.0, horizon_shift=-0.87)), horizon_days=273.0)]
    for _ in range(300):
        st = _random_state(rng)
        score = rng.uniform(0, 100)
        w = st.watermark
        assert w is not None
        for scorer in scorers:
            risks = [scorer(st, score, w + d * DAY_S) for d in (0, 0.5, 1, 3, 7, 30, 90, 400)]
            assert all(b >= a - 1e-12 for a, b in zip(risks, risks[1:], strict=False)), risks
            assert scorer(st, score, w - DAY_S) == scorer(st, score)  # at most the watermark
    quiet = _buyer([0, 10, 20], 20)
    assert churn_risk(quiet, 50.0, T0 + 200 * DAY_S) > churn_risk(quiet, 50.0) + 0.2


def test_a_purchase_never_raises_risk() -> None:
    rng = random.Random(3)
    for _ in range(300):
        days = sorted(rng.uniform(0, 300) for _ in range(rng.randint(0, 6)))
        now = (days[-1] if days else 0) + rng.uniform(1, 90)
        spend = rng.uniform(1, 300)
        before = base_risk(_buyer(days, now, spend), 50.0)
        after = base_risk(_buyer([*days, now], now, spend), 50.0)
        assert after <= before + 1e-12, (days, now)


def test_adjustments_raise_risk() -> None:
    st = _buyer([0, 10], 20)
    base = churn_risk(st, 50.0)
    assert churn_risk(st, 20.0) > base  # low experience
    assert churn_risk(st, 80.0) == pytest.approx(base)
    neg = _buyer([0, 10], 20)
    neg.last_negative = neg.watermark
    assert churn_risk(neg, 50.0) > base
    unresolved = _buyer([0, 10], 20)
    assert unresolved.watermark is not None
    unresolved.contacts = [(unresolved.watermark - 60, False, "e", "t", "r")]
    assert churn_risk(unresolved, 50.0) > base


def test_old_states_without_purchase_days_use_purchases() -> None:
    st = _buyer([0, 10, 20], 30)
    old = st.copy()
    old.purchase_days, old.first_day_spend = 0, 0.0
    assert purchase_history(old).x == purchase_history(st).x == 2
    assert base_risk(old, 50.0) == pytest.approx(base_risk(st, 50.0))


def test_drivers_explain_the_risk_with_evidence() -> None:
    st = _buyer([0, 10], 200)
    st.signals = KeptSignals.from_records(
        [(st.watermark or 0.0, -8.0, "unresolved_contact", "ev-contact")])
    drivers = churn_risk.drivers(st, 30.0)
    names = [d["name"] for d in drivers]
    assert names[0] == "recency_months"  # 190 quiet days dominate
    assert drivers[0]["evidence"] == ["p-last"] and _number(drivers[0]["log_odds"]) > 0
    exp = next(d for d in drivers if d["name"] == "experience")
    assert exp["evidence"] == ["ev-contact"] and _number(exp["log_odds"]) > 0


def test_params_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    PUBLISHED.save(path)
    assert load_churn_model(path) == PUBLISHED
    assert load_churn_model(None) is PUBLISHED
    raw = json.loads(path.read_text())
    raw["risk"]["coef"][2] = -0.1  # recency lowering the risk: not monotone in time
    with pytest.raises(ChurnParamsError, match="recency_months"):
        parse_churn_model(raw)
    raw = json.loads(path.read_text())
    raw["bgnbd"]["r"] = 0
    with pytest.raises(ChurnParamsError, match="bgnbd.r"):
        parse_churn_model(raw)
    with pytest.raises(ChurnParamsError, match="version"):
        parse_churn_model({"version": 9})


def test_a_horizon_other_than_the_params_is_refused() -> None:
    with pytest.raises(ValueError, match="refit"):
        ChurnScorer(PUBLISHED, horizon_days=30.0)


def test_risk_is_a_probability() -> None:
    st = _buyer([0, 1, 2, 3], 2000)
    st.last_negative = st.watermark
    r = churn_risk(st, 0.0)
    assert 0.0 <= r <= 1.0 and not math.isnan(r)
    assert 0.0 < churn_risk.clv(_buyer([0, 30, 60], 70)) < 1000


def test_the_inline_risk_is_the_feature_model() -> None:
    """__call__ (inline, per event) and purchase_risk(features) (fit, drivers) agree."""
    rng = random.Random(11)
    for _ in range(300):
        st = _random_state(rng)
        at = (st.watermark or 0.0) + rng.uniform(0, 200) * DAY_S
        assert base_risk(st, 50.0, at) == pytest.approx(
            base_risk.purchase_risk(purchase_history(st, at)), rel=1e-9, abs=1e-12
        )


def test_clv_is_bgnbd_purchases_times_gamma_gamma_spend_discounted() -> None:
    st = _buyer([0, 20, 40], 50, spend=80.0)
    h = purchase_history(st)
    assert h.x == 2 and h.mean_repeat_spend == pytest.approx(80.0)
    want = clv(PUBLISHED, h.x, h.t_x, h.big_t, h.mean_repeat_spend)
    assert churn_risk.clv(st) == pytest.approx(want, rel=1e-3)  # memoised at 0.1 day
    n = expected_purchases(BG, 2, 40.0, 50.0, 365.25)
    g = PUBLISHED.gamma_gamma
    spend = (g.gamma * g.p + g.p * 2 * 80.0) / (g.p * 2 + g.q - 1)
    assert want == pytest.approx(n * spend / 1.1**0.5)
    # quiet customers are worth less; never-buyers nothing
    assert churn_risk.clv(st, st.watermark + 200 * DAY_S) < churn_risk.clv(st)  # type: ignore[operator]
    assert churn_risk.clv(CustomerState(watermark=T0, first_seen=T0)) == 0.0


def test_state_show_explains_the_churn_risk() -> None:
    from cxsignals.state_cmd import churn_view

    st = _buyer([0, 10, 20], 120, spend=90.0)
    view = churn_view(st, churn_risk)
    assert view["churn_risk"] == round(churn_risk(st, st.score), 4)
    assert view["clv_12m"] > 0
    assert {d["name"] for d in view["drivers"]} == {
        "bgnbd_no_purchase_logit", "log_repeat_days", "recency_months", "log_spend"
    }
    # the drivers add up to the risk's log-odds minus the average customer's
    rk = PUBLISHED.risk
    mean_z = rk.intercept + sum(c * m for c, m in zip(rk.coef, rk.feature_means, strict=True))
    z = math.log(view["churn_risk"] / (1 - view["churn_risk"]))
    assert sum(float(d["log_odds"]) for d in view["drivers"]) == pytest.approx(z - mean_z, abs=1e-3)
