"""Experience score: signal weights, decay, saturation, explanation, journey stage."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pytest

from schemas.event_records import Event, from_model
from streams.core.explanation import explanation
from streams.core.scoring import (
    NEUTRAL,
    SATURATION_POINTS,
    add_signals,
    current_stage_value,
    decay,
)
from streams.core.signals import SignalWeights, event_signals
from streams.core.state import MAX_SIGNALS, CustomerState
from tests.journeys import make_event

W = SignalWeights()
T0 = datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc)
HALF_LIFE_S = 14 * 86_400


def ev(typ: str, props: dict[str, Any], **kw: Any) -> Event:
    return from_model(make_event("c", "e", typ, T0, props, **kw))


def total(signals: list[tuple[str, float]]) -> float:
    return sum(w for _n, w in signals)


def test_survey_weights_follow_the_scales() -> None:
    nps = [
        total(event_signals(ev("survey_answer", {"survey": "nps", "score": s}), W))
        for s in range(11)
    ]
    assert nps == sorted(nps)  # monotone in the answer
    assert nps[6] < 0 and nps[7] == 0 and nps[9] > 0  # detractor, passive, promoter
    csat = [
        total(event_signals(ev("survey_answer", {"survey": "csat", "score": s}), W))
        for s in range(1, 6)
    ]
    ces = [
        total(event_signals(ev("survey_answer", {"survey": "ces", "score": s}), W))
        for s in range(1, 8)
    ]
    assert csat == sorted(csat) and csat[2] == 0
    assert ces == sorted(ces) and ces[3] == 0


def test_comment_sentiment_adds_a_signal_unless_neutral() -> None:
    answer = ev("survey_answer", {"survey": "nps", "score": 8, "comment": "x"})
    assert event_signals(answer, W, sentiment=-0.8)[-1] == ("negative_comment", pytest.approx(-6.4))
    assert len(event_signals(answer, W, sentiment=0.01)) == 1


def test_friction_weighs_more_at_moments_of_truth() -> None:
    plain = total(
        event_signals(ev("cart_abandon", {"cart_id": "k", "cart_value": 1.0, "currency": "EUR"}), W)
    )
    at_checkout = total(
        event_signals(
            ev(
                "cart_abandon",
                {"cart_id": "k", "cart_value": 1.0, "currency": "EUR"},
                touchpoint="Checkout",
            ),
            W,
        )
    )
    assert at_checkout == pytest.approx(plain * W.moment_of_truth_factor) and plain < 0
    assert total(event_signals(ev("payment_failed", {}), W)) == pytest.approx(
        W.payment_failed * W.moment_of_truth_factor
    )


def test_support_contacts_unresolved_repeated_long_wait() -> None:
    def contact(resolved: bool, repeated: bool, wait_s: float | None = None) -> float:
        props: dict[str, Any] = {"contact_id": "t", "reason": "r", "resolved": resolved}
        if wait_s is not None:
            props["wait_s"] = wait_s
        return total(event_signals(ev("support_contact", props), W, repeated_contact=repeated))

    first_resolved = contact(True, False)
    assert first_resolved < 0  # first-contact resolution softens but never turns it positive
    assert contact(False, False) < first_resolved
    assert contact(False, True) < contact(True, True) < 0
    assert contact(True, True, wait_s=600) < contact(True, True, wait_s=10)


def test_purchase_is_positive_and_clean_page_view_neutral() -> None:
    assert (
        total(
            event_signals(
                ev("purchase", {"order_id": "o", "order_value": 5.0, "currency": "EUR"}), W
            )
        )
        > 0
    )
    assert event_signals(ev("page_view", {"url": "/"}), W) == []
    slow_error = event_signals(
        ev("page_view", {"url": "/", "http_status": 502, "load_time_ms": 9000}), W
    )
    assert [n for n, _ in slow_error] == ["error_page", "slow_page"]


def test_signals_decay_with_the_half_life_in_event_time() -> None:
    st = CustomerState(watermark=T0.timestamp())
    add_signals(st, T0.timestamp(), "e1", [("detractor", -10.0)], HALF_LIFE_S)
    assert st.score_sum == pytest.approx(-10.0)
    assert decay(HALF_LIFE_S, HALF_LIFE_S) == pytest.approx(0.5)
    assert decay(2 * HALF_LIFE_S, HALF_LIFE_S) == pytest.approx(0.25)


def test_late_signal_is_added_already_decayed() -> None:
    t0 = T0.timestamp()
    st = CustomerState(watermark=t0 + HALF_LIFE_S)
    add_signals(st, t0, "late", [("x", -8.0)], HALF_LIFE_S)
    assert st.score_sum == pytest.approx(-4.0)


def test_explanation_sums_to_score_minus_50_and_names_events() -> None:
    t0 = T0.timestamp()
    st = CustomerState(watermark=t0 + 3600)
    add_signals(st, t0, "bad", [("nps_detractor", -12.0)], HALF_LIFE_S)
    add_signals(st, t0 + 3600, "good", [("purchase", 3.0)], HALF_LIFE_S)
    score = NEUTRAL + NEUTRAL * math.tanh(st.score_sum / SATURATION_POINTS)
    expl = explanation(st, score, HALF_LIFE_S)
    assert [c.event_id for c in expl] == ["bad", "good"]
    assert expl[0].contribution < 0 < expl[1].contribution
    assert sum(c.contribution for c in expl) == pytest.approx(score - 50, abs=0.02)


def test_signal_list_keeps_the_strongest_decayed_signals() -> None:
    t0 = T0.timestamp()
    st = CustomerState(watermark=t0 + 10 * 86_400)
    add_signals(st, t0, "old-big", [("big", -20.0)], HALF_LIFE_S)
    for i in range(MAX_SIGNALS + 5):
        add_signals(st, t0 + 86_400, f"small{i}", [("small", -0.1)], HALF_LIFE_S)
    assert len(st.signals) == MAX_SIGNALS
    assert any(s[3] == "old-big" for s in st.signals.records())


def test_stage_is_the_furthest_reached_in_30_days_and_falls_back() -> None:
    st = CustomerState()
    t0 = T0.timestamp()
    st.watermark = t0
    st.stage_seen.update({"consideration": t0, "purchase": t0, "awareness": t0})
    assert current_stage_value(st) == "purchase"
    st.watermark = t0 + 31 * 86_400
    st.stage_seen["awareness"] = st.watermark
    assert current_stage_value(st) == "awareness"
    assert set(st.stage_seen) == {"awareness"}  # stages older than 30 days are forgotten


def test_explanation_empty_for_new_state() -> None:
    assert explanation(CustomerState(), 50.0, HALF_LIFE_S) == []


def _reference_add(kept: list[Any], t: float, event_id: str, signals: list[tuple[str, float]],
                   half_life_s: float) -> None:
    """add_signals' list as its contract states it: append, then a stable sort by rank and the
    weakest dropped (what it did before the ranks were remembered)."""
    for name, weight in signals:
        kept.append((t, weight, name, event_id))
    excess = len(kept) - MAX_SIGNALS
    if excess > 0:
        kept.sort(key=lambda s: math.log2(abs(s[1]) or 1e-12) + s[0] / half_life_s)
        del kept[:excess]


@pytest.mark.parametrize("seed", range(8))
def test_remembered_ranks_keep_the_list_a_full_sort_would(seed: int) -> None:
    import random

    rng = random.Random(seed)
    weights = [-8.0, -3.0, -1.5, -1.5, 0.0, 1.5, 2.0, 5.3392, 3]  # ties, a zero, an int
    half_life_s = 7 * 86_400.0
    st = CustomerState(watermark=1_800_000_000.0)
    expected: list[Any] = []
    for i in range(400):
        t = 1_800_000_000.0 - rng.choice([0.0, 0.0, 5.0, 3600.0, rng.random() * 86_400])
        signals = [(f"s{rng.randrange(3)}", rng.choice(weights))
                   for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        if i % 97 == 96:  # a state read back from its bytes: no remembered ranks
            st = CustomerState.from_bytes(st.to_bytes())
            assert not st.signals.ranks_remembered
        if i == 250:  # another half-life (a restarted worker with another config)
            half_life_s = 2 * 86_400.0
        add_signals(st, t, f"e{i}", signals, half_life_s)
        _reference_add(expected, t, f"e{i}", signals, half_life_s)
        assert st.signals.records() == expected, f"event {i}"
    assert st.signals.ranks_remembered
