"""The engine's fast paths agree with the reference functions they replace."""

from __future__ import annotations

import pytest

from schemas.events import derive_stage, touchpoint_adapter
from streams.core.engine import _PAGE_VIEW_STAGE
from streams.core.rule_evaluators import EVENT_RULES
from streams.core.rule_plan import PAGE_VIEW_ONLY_IF, page_view_plan_key, rule_plan
from streams.core.rules import load_rules


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


def test_next_due_is_the_earliest_deadline_of_carts_and_deferred_alerts() -> None:
    from streams.core.state import CustomerState

    cart = (100.0, 40.0, "e1", "k", 40.0, "EUR")
    deferred_early, deferred_late = (90.0, {"rule": "a"}), (110.0, {"rule": "b"})
    cases = [
        ([], [], None),
        ([cart], [], 100.0),
        ([], [deferred_late], 110.0),
        ([cart], [deferred_early], 90.0),
        ([cart], [deferred_late], 100.0),
    ]
    for carts, deferred, due in cases:
        st = CustomerState(pending_carts=list(carts), deferred=list(deferred), lag_s=5.0)
        dues = [c[0] for c in carts] + [d[0] for d in deferred]
        assert st.next_due() == due == (min(dues) if dues else None)
        assert st.deadline_wakeup_s() == (None if due is None else due + 5.0)
