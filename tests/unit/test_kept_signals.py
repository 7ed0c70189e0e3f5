"""The packed signal list (streams/core/kept_signals.py): its wire form and its readers, against
the list of records it replaced, and the explanation read from its strongest signals. Which
signals it keeps: tests/unit/test_scoring.py."""

from __future__ import annotations

import math
import random

import pytest

from streams.core.explanation import explanation
from streams.core.kept_signals import KeptSignals
from streams.core.scoring import add_signals
from streams.core.state import MAX_SIGNALS, CustomerState

RECORDS = [(100.0, -2.5, "slow_page", "e1"), (50.0, 3.0, "purchase", "e2"),
           (75.0, -8.0, "nps_detractor", "e3"), (75.0, 0.0, "noop", "e4")]


def test_the_wire_form_round_trips_and_rejects_columns_that_do_not_pair_up() -> None:
    kept = KeptSignals.from_records(RECORDS)
    times, weights, names, ids = kept.wire()
    assert len(times) == len(weights) == 32 and names[1] == "purchase" and ids[3] == "e4"
    back = KeptSignals.from_wire(times, weights, list(names), list(ids))
    assert back == kept and back.records() == RECORDS
    for bad in ((times[:-8], weights, names, ids), (times, weights[:-1], names, ids),
                (times, weights, names[:-1], ids), (times, weights, names, ids[:-1])):
        with pytest.raises(ValueError, match="not one signal each"):
            KeptSignals.from_wire(*bad)


def test_negatives_read_what_the_records_said() -> None:
    kept = KeptSignals.from_records(RECORDS)
    assert kept.negatives(0.0) == [(100.0, "e1"), (75.0, "e3")]
    assert kept.negatives(80.0) == [(100.0, "e1")]
    assert kept.negative_ids() == ["e1", "e3"]
    assert KeptSignals().negatives(0.0) == [] and KeptSignals().negative_ids() == []


def test_a_full_list_stays_full_and_in_rank_order_through_the_state_bytes() -> None:
    rng = random.Random(11)
    st = CustomerState(watermark=1e9)
    for i in range(200):
        st.signals.add(1e9 - rng.random() * 1e5, f"e{i}",
                       [("s", rng.choice([-3.0, -1.0, 2.0]))], MAX_SIGNALS, 86_400.0)
    assert len(st.signals) == MAX_SIGNALS and st.signals.ranks_remembered
    back = CustomerState.from_bytes(st.to_bytes())
    assert back == st and back.signals.records() == st.signals.records()
    assert not back.signals.ranks_remembered  # not stored: ranked again at the next trim
    assert st.as_dict()["signals"] == st.signals.records()
    assert repr(back.signals) == f"KeptSignals({MAX_SIGNALS} signals)"


def _reference_explanation(st: CustomerState, score: float, half_life_s: float,
                           top: int) -> list[tuple[str, float, str]]:
    """The explanation as computed before the ranks were used: every signal, one sort."""
    if st.watermark is None or not len(st.signals):
        return []
    w, s = st.watermark, st.score_sum
    scale = (score - 50.0) / s if abs(s) > 1e-9 else 1.0
    ranked = sorted(
        (-abs(c := wt * 2.0 ** ((t - w) / half_life_s) * scale), t, eid, name, i, c)
        for i, (t, wt, name, eid) in enumerate(st.signals.records()))
    return [(name, round(c, 2), eid) for _s, _t, eid, name, _i, c in ranked[:top]
            if abs(c) >= 0.005]


@pytest.mark.parametrize("seed", range(6))
def test_the_explanation_of_a_ranked_list_is_the_one_of_a_full_sort(seed: int) -> None:
    """``explanation`` reads only ``KeptSignals.strongest`` of a full, ranked list: the same
    contributions as sorting every signal, ties (equal weights and times) included."""
    rng = random.Random(seed)
    half_life_s = 3 * 86_400.0
    st = CustomerState(watermark=1.8e9)
    ranked_calls = 0
    for i in range(300):
        t = 1.8e9 - rng.choice([0.0, 0.0, 60.0, rng.random() * 5 * 86_400])
        signals = [(f"s{rng.randrange(3)}", rng.choice([-4.0, -1.5, -1.5, 0.0, 1.5, 2.0]))
                   for _ in range(rng.choice([1, 1, 2]))]
        add_signals(st, t, f"e{rng.randrange(40)}", signals, half_life_s)  # ids repeat: ties
        st.score = 50.0 + 50.0 * math.tanh(st.score_sum / 50.0)
        ranked_calls += len(st.signals.strongest(5, half_life_s)) < len(st.signals)
        # A decoded copy has no ranks: every signal is a candidate, and only those as large
        # as the top-th are ranked (ties included).
        decoded = CustomerState.from_bytes(st.to_bytes())
        for top in (1, 5):
            for state in (st, decoded):
                got = [(c.signal, c.contribution, c.event_id)
                       for c in explanation(state, state.score, half_life_s, top)]
                assert got == _reference_explanation(st, st.score, half_life_s, top), f"event {i}"
    assert ranked_calls > 50  # the short path was taken, not just the full sort
