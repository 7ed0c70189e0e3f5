"""The uplift arithmetic of `cxsignals report outcomes` (sinks/outcomes.py) against published
values and a simulation of its coverage."""

from __future__ import annotations

import random

import pytest

from cxsignals.report_cmd import render_outcomes
from sinks.outcomes import (
    newcombe_difference_interval,
    outcome_rows,
    ratio_interval,
    required_per_group,
    uplift,
    wilson_interval,
)


def test_wilson_and_newcombe_match_newcombe_1998() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II: 56/70 vs 48/80, method 10.
    low, high = newcombe_difference_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # Wilson interval of 81/263 (Newcombe 1998a, table I): 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_rate_ratio_interval_contains_the_ratio_and_needs_successes() -> None:
    ci = ratio_interval(30, 100, 15, 100)  # ratio 2
    assert ci is not None
    low, high = ci
    assert low < 2 < high and low > 1
    assert ratio_interval(0, 100, 15, 100) is None


def test_notes_say_when_a_group_is_too_small_or_what_the_interval_shows() -> None:
    assert uplift(1000, 300, 20, 4)["note"] == "too small to tell"
    assert uplift(1000, 300, 0, 0)["note"].startswith("no control group")
    assert uplift(2000, 600, 2000, 400)["note"] == "uplift"
    assert uplift(2000, 400, 2000, 600)["note"] == "harm"
    assert uplift(2000, 400, 2000, 410)["note"] == "no clear difference"
    entry = uplift(2000, 600, 2000, 400)
    assert entry["uplift_abs"] == pytest.approx(0.1)
    assert entry["uplift_rel"] == pytest.approx(0.5)


def test_the_interval_covers_the_true_uplift_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    p0, true_uplift, n1, n0 = 0.2, 0.1, 400, 400
    covered = 0
    runs = 1000
    for _ in range(runs):
        x1 = sum(rng.random() < p0 + true_uplift for _ in range(n1))
        x0 = sum(rng.random() < p0 for _ in range(n0))
        low, high = newcombe_difference_interval(x1, n1, x0, n0)
        covered += low <= true_uplift <= high
    assert 0.93 <= covered / runs <= 0.97


def test_sample_size_matches_the_textbook_formula() -> None:
    # Fleiss: p0 0.20 vs p1 0.25, alpha 0.05 two-sided, power 0.8 -> 1094 per group.
    assert required_per_group(0.20, 0.05) == 1094
    assert required_per_group(0.10, 0.02) == 3841
    with pytest.raises(ValueError):
        required_per_group(0.95, 0.10)


def test_rows_are_grouped_per_rule_and_rendered() -> None:
    rows = [("cart_recovery", "", 0, 900, 300, 5), ("cart_recovery", "", 1, 100, 20, 1),
            ("repeat_contact", "", 0, 50, 40, 0)]
    entries = outcome_rows(rows)
    cart = entries[0]
    assert (cart["sent"], cart["withheld"], cart["pending"]) == (900, 100, 6)
    assert cart["success"] == "purchase within 24 h"
    assert entries[1]["note"].startswith("no control group")
    text = render_outcomes({"window": {"since_s": 0, "until_s": 30 * 86_400}, "by": None,
                            "rules": entries})
    assert "cart_recovery" in text and "+13.3" in text and "33.3%" in text
