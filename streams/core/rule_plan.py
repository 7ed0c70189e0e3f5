"""Which rules an event can raise, in which order, and the cheap gates in front of them.

:func:`rule_plan` precomputes, per event type (page views split by product id and 5xx status),
the enabled rules that event can trigger; :func:`evaluate_event` runs one plan after an event was
applied and returns the candidates, support rules first.
"""

from __future__ import annotations

from typing import Any, Final

from schemas.event_records import Event
from streams.core.churn import ChurnScorer
from streams.core.rule_config import RuleSet
from streams.core.rule_evaluators import EVENT_RULES, Candidate, Evaluator, EventFacts
from streams.core.state import CustomerState

RULE_EVENT_TYPES: dict[str, frozenset[str] | None] = {
    "detractor_follow_up": frozenset({"survey_answer"}),
    "repeat_contact": frozenset({"support_contact"}),
    "friction_spike": frozenset({"page_view", "app_error", "payment_failed"}),
    "experience_drop": None,
    "high_value_at_risk": None,
    "browse_intent": frozenset({"page_view"}),
    "win_back": None,
    "promoter_referral": frozenset({"survey_answer"}),
}

# Cheap necessary conditions of some rules, tested before calling them: most events raise
# nothing, and a call costs more than the test. Each gate is the rule's own test, on the same
# values (see evaluate_event), so gating never changes what is raised.
GATE_NONE: Final = 0
GATE_DROP: Final = 1  # experience_drop: score_peak - score_after >= min_drop_points
# high_value_at_risk: spend >= min_spend and risk_after >= min_churn_risk
GATE_HIGH_VALUE: Final = 2
GATE_WIN_BACK: Final = 3  # win_back: risk_before < min_churn_risk <= risk_after

# (rule, its config, gate, gate thresholds a and b)
Step = tuple[Evaluator, Any, int, float, float]
RulePlan = dict[str, tuple[Step, ...]]

# Page views raise friction_spike only when they are a server error (error_kind), and
# browse_intent only when they name a product: their plans are split by those two facts.
PAGE_VIEW: Final = "page_view"
PAGE_VIEW_ONLY_IF: dict[str, str] = {"friction_spike": "error", "browse_intent": "product"}


def page_view_plan_key(product: bool, error: bool) -> str:
    """The key of :func:`rule_plan` for a page view with/without a product id and a 5xx status."""
    return f"{PAGE_VIEW}:{'product' if product else 'no_product'}:{'error' if error else 'ok'}"


def _step(rule_id: str, fn: Evaluator, cfg: Any) -> Step:
    if rule_id == "experience_drop":
        return (fn, cfg, GATE_DROP, cfg.params.min_drop_points, 0.0)
    if rule_id == "high_value_at_risk":
        return (fn, cfg, GATE_HIGH_VALUE, cfg.params.min_spend, cfg.params.min_churn_risk)
    if rule_id == "win_back":
        return (fn, cfg, GATE_WIN_BACK, cfg.params.min_churn_risk, 0.0)
    return (fn, cfg, GATE_NONE, 0.0, 0.0)


def _rules_for(rules: RuleSet, event_type: str) -> list[tuple[str, Evaluator, Any]]:
    """(rule id, evaluator, config) of the enabled rules that ``event_type`` can trigger."""
    out = []
    for rule_id, fn in EVENT_RULES:
        cfg = rules.enabled.get(rule_id)
        types = RULE_EVENT_TYPES[rule_id]
        if cfg is not None and (types is None or event_type in types):
            out.append((rule_id, fn, cfg))
    return out


def rule_plan(rules: RuleSet, event_types: tuple[str, ...]) -> RulePlan:
    """For each event type, the enabled rules it can trigger, in evaluation order.

    Page views have four more keys (:func:`page_view_plan_key`), without the rules that the
    page view's product id and status rule out.
    """
    plan: RulePlan = {
        event_type: tuple(_step(*r) for r in _rules_for(rules, event_type))
        for event_type in event_types
    }
    if PAGE_VIEW in event_types:
        page_view_rules = _rules_for(rules, PAGE_VIEW)
        for product in (False, True):
            for error in (False, True):
                facts = {"product": product, "error": error}
                plan[page_view_plan_key(product, error)] = tuple(
                    _step(rule_id, fn, cfg)
                    for rule_id, fn, cfg in page_view_rules
                    if facts.get(PAGE_VIEW_ONLY_IF.get(rule_id, ""), True)
                )
    return plan


def evaluate_event(
    steps: tuple[Step, ...],
    st: CustomerState,
    event: Event,
    t: float,
    sentiment: float | None,
    score_before: float,
    score_after: float,
    score_peak: float,
    risk_before: float,
    risk_after: float,
    spend_before: float,
    product_key: int | None = None,
    churn: ChurnScorer | None = None,
) -> list[Candidate]:
    """Candidates raised by one event (state already updated), support rules first.

    The arguments are the fields of :class:`EventFacts`, built only if a rule passes its gate.
    """
    out: list[Candidate] = []
    facts = None
    for fn, cfg, gate, a, b in steps:
        if gate:
            if gate == GATE_DROP:
                if score_peak - score_after < a:
                    continue
            elif gate == GATE_HIGH_VALUE:
                if not (st.spend >= a and risk_after >= b):
                    continue
            elif not risk_before < a <= risk_after:  # GATE_WIN_BACK
                continue
        if facts is None:
            facts = EventFacts(
                event,
                t,
                sentiment,
                score_before,
                score_after,
                score_peak,
                risk_before,
                risk_after,
                spend_before,
                product_key,
                churn,
            )
        cand = fn(st, facts, cfg)
        if cand is not None:
            out.append(cand)
    return out
