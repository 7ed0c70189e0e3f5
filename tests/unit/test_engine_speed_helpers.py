"""The engine's fast paths agree with the reference functions they replace."""

from __future__ import annotations

import random

import pytest

from schemas.events import derive_stage, touchpoint_adapter
from streams.core.churn import BgNbdParams, ChurnAdjustments, ChurnScorer, churn_risk
from streams.core.engine import _PAGE_VIEW_STAGE
from streams.core.rule_evaluators import EVENT_RULES
from streams.core.rule_plan import PAGE_VIEW_ONLY_IF, page_view_plan_key, rule_plan
from streams.core.rules import load_rules
from streams.core.state import CustomerState
from streams.core.windows import DAY_S


def _random_state(rng: random.Random) -> CustomerState:
    w = 1_715_000_000.0 + rng.uniform(0, 90 * DAY_S)
    st = CustomerState(watermark=w, first_seen=w - rng.uniform(0, 200 * DAY_S))
    if rng.random() < 0.6:
        st.purchases = rng.randint(1, 40)
        st.first_purchase = w - rng.uniform(0, 300 * DAY_S)
        st.last_purchase = rng.uniform(st.first_purchase, w)
    if rng.random() < 0.3:
        st.last_negative = w - rng.uniform(0, 60 * DAY_S)
    for _ in range(rng.randint(0, 6)):
        t = w - rng.uniform(0, 10 * DAY_S)
        st.contacts.append((t, rng.random() < 0.5, "e", "c", "r"))
    st.contacts.sort()
    for _ in range(rng.randint(0, 30)):
        day = int(w // DAY_S) - rng.randint(-1, 40)
        st.activity_daily[day] = st.activity_daily.get(day, 0.0) + rng.randint(1, 5)
    return st


@pytest.mark.parametrize(
    "params",
    [(BgNbdParams(), ChurnAdjustments()), (BgNbdParams(r=0.5, a=2.0), ChurnAdjustments(0.9))],
)
def test_churn_scorer_is_bit_identical_to_churn_risk(
    params: tuple[BgNbdParams, ChurnAdjustments],
) -> None:
    p, adj = params
    scorer = ChurnScorer(p, adj)
    rng = random.Random(5)
    for _ in range(3000):
        st = _random_state(rng)
        score = rng.choice([0.0, 12.5, 49.99, 50.0, 80.0, rng.uniform(0, 100)])
        assert scorer(st, score) == churn_risk(st, score, p, adj)


@pytest.mark.parametrize("product", [None, "sku-1"])
@pytest.mark.parametrize("status", [None, 200, 404, 503])
def test_page_view_stage_and_plan(product: str | None, status: int | None) -> None:
    props: dict[str, object] = {"url": "/"}
    if product is not None:
        props["product_id"] = product
    if status is not None:
        props["http_status"] = status
    event = touchpoint_adapter.validate_python(
        {
            "event_id": "e",
            "schema_version": 1,
            "occurred_at": "2024-05-06T12:00:00Z",
            "customer_id": "c",
            "channel": "web",
            "event_type": "page_view",
            "properties": props,
        }
    )
    assert _PAGE_VIEW_STAGE[product is not None] == derive_stage(event).value
    rules = load_rules(None)
    plan = rule_plan(rules, ("page_view",))
    full = plan["page_view"]
    error = status is not None and status >= 500
    variant = plan[page_view_plan_key(product is not None, error)]
    # The variant drops exactly the rules that this page view cannot raise.
    facts = {"product": product is not None, "error": error}
    by_fn = {fn: rule_id for rule_id, fn in EVENT_RULES}
    expected = [s for s in full if facts.get(PAGE_VIEW_ONLY_IF.get(by_fn[s[0]], ""), True)]
    assert list(variant) == expected
    assert len(full) == len([r for r, _fn in EVENT_RULES if r in rules.enabled]) - 3
