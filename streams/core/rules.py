"""Alert rules: the validated configuration file, and what makes each rule fire.

The rules file (JSON, shipped as ``streams/core/default_rules.json``; another path via
``CX_RULES_PATH``) lists rules by stable id with ``kind``, ``enabled``, ``cooldown_s`` and
``params``, plus the alert ``policy``. A rule that the file does not list does not run.
:func:`load_rules` raises :class:`RulesError` naming the rule and field of the first problems.

Evaluation is pure: each ``_rule_*`` function reads the state *after* the event was applied and
the :class:`EventFacts`, and returns a :class:`Candidate` (an alert before policy) or None.
docs/scoring.md describes every rule in words.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.alerts import AlertKind
from schemas.event_records import (
    Event,
    PageViewEvent,
    SupportContactEvent,
    SurveyAnswerEvent,
)
from streams.core.signals import error_kind
from streams.core.state import CustomerState, short_hash
from streams.core.windows import DAY_S, HOUR_S, timed_between

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.json")


class RulesError(ValueError):
    """The rules file is missing, not JSON, or does not validate; the message says where."""


# ---------------------------------------------------------------- configuration models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CartRecoveryParams(_Strict):
    min_cart_value: float = Field(20.0, ge=0)
    wait_minutes: float = Field(30.0, gt=0, le=24 * 60)


class BrowseIntentParams(_Strict):
    min_views: int = Field(3, ge=2)
    window_minutes: float = Field(60.0, gt=0, le=24 * 60)


class WinBackParams(_Strict):
    min_churn_risk: float = Field(0.6, gt=0, le=1)
    min_experience_score: float = Field(40.0, ge=0, le=100)
    min_purchases: int = Field(1, ge=0)


class PromoterReferralParams(_Strict):
    min_nps: int = Field(9, ge=0, le=10)
    purchase_within_days: float = Field(30.0, gt=0)


class DetractorFollowUpParams(_Strict):
    max_nps: int = Field(6, ge=0, le=10)
    max_csat: int = Field(2, ge=1, le=5)
    max_ces: int = Field(2, ge=1, le=7)
    max_sentiment: float = Field(-0.5, ge=-1, le=1)


class RepeatContactParams(_Strict):
    min_contacts: int = Field(2, ge=2)
    window_hours: float = Field(24.0, gt=0, le=7 * 24)


class FrictionSpikeParams(_Strict):
    min_errors: int = Field(3, ge=1)
    window_minutes: float = Field(60.0, gt=0, le=24 * 60)


class ExperienceDropParams(_Strict):
    min_drop_points: float = Field(20.0, gt=0, le=100)
    # The hourly score buckets cover 24 h, so a longer window cannot be honoured.
    window_hours: int = Field(24, ge=1, le=24)


class HighValueAtRiskParams(_Strict):
    min_spend: float = Field(500.0, ge=0)
    min_churn_risk: float = Field(0.5, gt=0, le=1)


class _Rule(_Strict):
    enabled: bool = True
    kind: AlertKind

    @model_validator(mode="after")
    def _kind_matches(self) -> _Rule:
        rule_id = getattr(self, "id", "")
        expected = RULE_KINDS[rule_id]
        if self.kind is not expected:
            raise ValueError(f"rule {rule_id!r} is a {expected.value} rule, not {self.kind.value}")
        return self


class CartRecoveryRule(_Rule):
    id: Literal["cart_recovery"]
    cooldown_s: float = Field(6 * HOUR_S, ge=0)
    params: CartRecoveryParams = CartRecoveryParams()


class BrowseIntentRule(_Rule):
    id: Literal["browse_intent"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: BrowseIntentParams = BrowseIntentParams()


class WinBackRule(_Rule):
    id: Literal["win_back"]
    cooldown_s: float = Field(30 * DAY_S, ge=0)
    params: WinBackParams = WinBackParams()


class PromoterReferralRule(_Rule):
    id: Literal["promoter_referral"]
    cooldown_s: float = Field(30 * DAY_S, ge=0)
    params: PromoterReferralParams = PromoterReferralParams()


class DetractorFollowUpRule(_Rule):
    id: Literal["detractor_follow_up"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: DetractorFollowUpParams = DetractorFollowUpParams()


class RepeatContactRule(_Rule):
    id: Literal["repeat_contact"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: RepeatContactParams = RepeatContactParams()


class FrictionSpikeRule(_Rule):
    id: Literal["friction_spike"]
    cooldown_s: float = Field(HOUR_S, ge=0)
    params: FrictionSpikeParams = FrictionSpikeParams()


class ExperienceDropRule(_Rule):
    id: Literal["experience_drop"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: ExperienceDropParams = ExperienceDropParams()


class HighValueAtRiskRule(_Rule):
    id: Literal["high_value_at_risk"]
    cooldown_s: float = Field(7 * DAY_S, ge=0)
    params: HighValueAtRiskParams = HighValueAtRiskParams()


RuleConfig = Annotated[
    CartRecoveryRule
    | BrowseIntentRule
    | WinBackRule
    | PromoterReferralRule
    | DetractorFollowUpRule
    | RepeatContactRule
    | FrictionSpikeRule
    | ExperienceDropRule
    | HighValueAtRiskRule,
    Field(discriminator="id"),
]

RULE_KINDS: dict[str, AlertKind] = {
    "cart_recovery": AlertKind.marketing,
    "browse_intent": AlertKind.marketing,
    "win_back": AlertKind.marketing,
    "promoter_referral": AlertKind.marketing,
    "detractor_follow_up": AlertKind.support,
    "repeat_contact": AlertKind.support,
    "friction_spike": AlertKind.support,
    "experience_drop": AlertKind.support,
    "high_value_at_risk": AlertKind.support,
}
RULE_IDS: tuple[str, ...] = tuple(RULE_KINDS)


class QuietHours(_Strict):
    """Local wall-clock span (customer's time zone) without marketing; may wrap midnight."""

    start: time = time(21, 0)
    end: time = time(8, 0)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet_hours start and end must differ")
        return self


class PolicyConfig(_Strict):
    daily_cap: dict[AlertKind, int] = Field(
        default_factory=lambda: {AlertKind.marketing: 2, AlertKind.support: 3}
    )
    quiet_hours: QuietHours | None = QuietHours()
    open_support_alert_s: float = Field(2 * DAY_S, ge=0)
    negative_answer_s: float = Field(7 * DAY_S, ge=0)

    @model_validator(mode="after")
    def _caps_positive(self) -> PolicyConfig:
        for kind, cap in self.daily_cap.items():
            if cap < 0:
                raise ValueError(f"daily_cap for {kind.value} must be >= 0")
        return self


class RulesFile(_Strict):
    version: Literal[1]
    rules: list[RuleConfig]
    policy: PolicyConfig = PolicyConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule {rule.id!r} is listed twice")
            seen.add(rule.id)
        return self


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The validated rules: ``enabled`` maps rule id -> config for enabled rules only."""

    enabled: dict[str, Any]
    policy: PolicyConfig
    detractor: DetractorFollowUpParams  # thresholds also used for suppression and churn

    @classmethod
    def from_file_model(cls, model: RulesFile) -> RuleSet:
        by_id = {r.id: r for r in model.rules}
        det = by_id.get("detractor_follow_up")
        return cls(
            enabled={r.id: r for r in model.rules if r.enabled},
            policy=model.policy,
            detractor=det.params
            if isinstance(det, DetractorFollowUpRule)
            else DetractorFollowUpParams(),
        )

    def cooldown_s(self, rule_id: str) -> float:
        rule = self.enabled.get(rule_id)
        return float(rule.cooldown_s) if rule is not None else 0.0


def _describe(raw: Any, err: Any) -> str:
    loc = list(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        idx = loc[1]
        rule_id = "?"
        if isinstance(raw, dict) and isinstance(raw.get("rules"), list) and idx < len(raw["rules"]):
            item = raw["rules"][idx]
            rule_id = item.get("id", "?") if isinstance(item, dict) else "?"
        field_path = [str(p) for p in loc[2:] if p != rule_id]
        field = ".".join(field_path) or "(rule)"
        return f"rule {rule_id!r} (rules[{idx}]) field {field}: {err['msg']}"
    return f"field {where}: {err['msg']}"


def parse_rules(raw: Any, source: str = "<rules>") -> RuleSet:
    """Validate an already-decoded rules document (see :func:`load_rules`)."""
    try:
        model = RulesFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(raw, e) for e in exc.errors()[:5])
        raise RulesError(f"invalid rules file {source}: {problems}") from None
    return RuleSet.from_file_model(model)


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file; ``None`` loads the shipped default_rules.json.

    Raises RulesError (a ValueError) if the file cannot be read, is not JSON, or does not
    validate; the message names the file, the rule id and the field.
    """
    path = path or DEFAULT_RULES_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise RulesError(f"rules file {path} is not valid JSON: {exc}") from None
    return parse_rules(raw, str(path))


# ---------------------------------------------------------------- evaluation


@dataclass(slots=True)
class Candidate:
    """An alert that a rule wants to send, before the policy decides."""

    rule: str
    kind: AlertKind
    event_time: float
    evidence: list[str]
    action: str
    context: dict[str, Any]


@dataclass(slots=True)
class EventFacts:
    """What the rules need to know about the event just applied."""

    event: Event
    t: float
    sentiment: float | None
    score_before: float
    score_after: float
    # Highest score in the experience_drop window before this event; only computed when the
    # event lowered the score (otherwise score_before: an event that does not lower the score
    # does not raise experience_drop).
    score_peak: float
    risk_before: float
    risk_after: float
    spend_before: float
    product_key: int | None = None  # short_hash of a viewed product id, already computed


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def is_negative_answer(
    event: SurveyAnswerEvent, sentiment: float | None, p: DetractorFollowUpParams
) -> bool:
    """A detractor NPS, low CSAT or CES, or a strongly negative comment."""
    sp = event.properties
    limit = {"nps": p.max_nps, "csat": p.max_csat, "ces": p.max_ces}[sp.survey]
    return sp.score <= limit or (sentiment is not None and sentiment <= p.max_sentiment)


def _detractor_follow_up(
    st: CustomerState, f: EventFacts, r: DetractorFollowUpRule
) -> Candidate | None:
    ev = f.event
    if not isinstance(ev, SurveyAnswerEvent) or not is_negative_answer(ev, f.sentiment, r.params):
        return None
    sp = ev.properties
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=[ev.event_id],
        action=(
            f"Contact the customer within 24 h about their {sp.survey.upper()} answer "
            f"({sp.score}); acknowledge the problem and offer a fix."
        ),
        context={
            "survey": sp.survey,
            "score": sp.score,
            "sentiment": None if f.sentiment is None else round(f.sentiment, 3),
            "touchpoint": ev.touchpoint,
            "channel": ev.channel.value,
        },
    )


def _repeat_contact(st: CustomerState, f: EventFacts, r: RepeatContactRule) -> Candidate | None:
    if not isinstance(f.event, SupportContactEvent):
        return None
    window = timed_between(st.contacts, f.t - r.params.window_hours * HOUR_S, f.t)
    if len(window) < r.params.min_contacts or all(c[1] for c in window):
        return None
    unresolved = [c for c in window if not c[1]]
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=[c[2] for c in window],
        action=(
            f"Escalate: {len(window)} support contacts in {r.params.window_hours:g} h, "
            f"{len(unresolved)} unresolved. Assign one owner and resolve in a single contact."
        ),
        context={
            "contacts": len(window),
            "unresolved": len(unresolved),
            "contact_ids": [c[3] for c in window],
            "reasons": sorted({c[4] for c in window}),
        },
    )


def _friction_spike(st: CustomerState, f: EventFacts, r: FrictionSpikeRule) -> Candidate | None:
    if error_kind(f.event) is None:
        return None
    win = r.params.window_minutes * 60
    near = timed_between(st.errors, f.t - win, f.t + win)
    # The earliest window of length `win` that contains this event and enough errors.
    for i, first in enumerate(near):
        if first[0] > f.t:
            break
        inside = [e for e in near[i:] if e[0] <= first[0] + win]
        if inside[-1][0] >= f.t and len(inside) >= r.params.min_errors:
            kinds: dict[str, int] = {}
            for e in inside:
                kinds[e[2]] = kinds.get(e[2], 0) + 1
            return Candidate(
                rule=r.id,
                kind=r.kind,
                event_time=f.t,
                evidence=[e[1] for e in inside],
                action=(
                    f"{len(inside)} errors or failed payments within "
                    f"{r.params.window_minutes:g} min: check the customer's session and offer "
                    "help completing what they were doing."
                ),
                context={"errors": len(inside), "by_kind": kinds, "first_at": _iso(first[0])},
            )
    return None


def _experience_drop(st: CustomerState, f: EventFacts, r: ExperienceDropRule) -> Candidate | None:
    drop = f.score_peak - f.score_after
    if drop < r.params.min_drop_points:
        return None
    assert st.watermark is not None
    horizon = st.watermark - r.params.window_hours * HOUR_S
    negatives = sorted((s[0], s[3]) for s in st.signals if s[1] < 0 and s[0] >= horizon)
    evidence = list(dict.fromkeys([eid for _t, eid in negatives] + [f.event.event_id]))[-10:]
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=evidence,
        action=(
            f"Experience score fell {drop:.0f} points within {r.params.window_hours} h: review the "
            "listed events and reach out before the customer complains."
        ),
        context={"from_score": round(f.score_peak, 2), "to_score": round(f.score_after, 2)},
    )


def _high_value_at_risk(
    st: CustomerState, f: EventFacts, r: HighValueAtRiskRule
) -> Candidate | None:
    p = r.params
    now_true = st.spend >= p.min_spend and f.risk_after >= p.min_churn_risk
    was_true = f.spend_before >= p.min_spend and f.risk_before >= p.min_churn_risk
    if not now_true or was_true:
        return None
    evidence = [e for e in (st.last_purchase_id, f.event.event_id) if e]
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=list(dict.fromkeys(evidence)),
        action="High-value customer at risk of churning: assign an account manager to call.",
        context={"lifetime_spend": round(st.spend, 2), "churn_risk": round(f.risk_after, 4)},
    )


def _browse_intent(st: CustomerState, f: EventFacts, r: BrowseIntentRule) -> Candidate | None:
    ev = f.event
    if not isinstance(ev, PageViewEvent) or ev.properties.product_id is None:
        return None
    product = ev.properties.product_id
    win = r.params.window_minutes * 60
    key = f.product_key if f.product_key is not None else short_hash(product)
    views = [v for v in timed_between(st.views, f.t - win, f.t) if v[2] == key]
    if len(views) < r.params.min_views:
        return None
    if st.last_cart is not None and st.last_cart >= views[0][0]:
        return None
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=[v[1] for v in views],
        action=f"Recommend product {product} (or similar) with a personalised message.",
        context={"product_id": product, "views": len(views)},
    )


def _win_back(st: CustomerState, f: EventFacts, r: WinBackRule) -> Candidate | None:
    p = r.params
    if st.purchases < p.min_purchases or f.score_after < p.min_experience_score:
        return None
    if not f.risk_before < p.min_churn_risk <= f.risk_after:
        return None
    days = None if st.last_purchase is None else round((f.t - st.last_purchase) / DAY_S, 1)
    evidence = [e for e in (st.last_purchase_id, f.event.event_id) if e]
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=list(dict.fromkeys(evidence)),
        action="Send a win-back offer: the customer is drifting away but had a good experience.",
        context={"churn_risk": round(f.risk_after, 4), "days_since_last_purchase": days},
    )


def _promoter_referral(
    st: CustomerState, f: EventFacts, r: PromoterReferralRule
) -> Candidate | None:
    ev = f.event
    if not isinstance(ev, SurveyAnswerEvent) or ev.properties.survey != "nps":
        return None
    if ev.properties.score < r.params.min_nps or st.last_purchase is None:
        return None
    since = f.t - st.last_purchase
    if not 0 <= since <= r.params.purchase_within_days * DAY_S or st.last_purchase_id is None:
        return None
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=[st.last_purchase_id, ev.event_id],
        action="Ask for a referral or a public review while the customer is delighted.",
        context={"nps": ev.properties.score, "purchase_event_id": st.last_purchase_id},
    )


Evaluator = Callable[[CustomerState, EventFacts, Any], "Candidate | None"]

# Support rules first: a support alert raised by an event suppresses marketing from the same event.
EVENT_RULES: tuple[tuple[str, Evaluator], ...] = (
    ("detractor_follow_up", _detractor_follow_up),
    ("repeat_contact", _repeat_contact),
    ("friction_spike", _friction_spike),
    ("experience_drop", _experience_drop),
    ("high_value_at_risk", _high_value_at_risk),
    ("browse_intent", _browse_intent),
    ("win_back", _win_back),
    ("promoter_referral", _promoter_referral),
)


# Event types that can make a rule fire; None = any event (through the scores).
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
GATE_NONE = 0
GATE_DROP = 1  # experience_drop: score_peak - score_after >= min_drop_points
GATE_HIGH_VALUE = 2  # high_value_at_risk: spend >= min_spend and risk_after >= min_churn_risk
GATE_WIN_BACK = 3  # win_back: risk_before < min_churn_risk <= risk_after

# (rule, its config, gate, gate thresholds a and b)
Step = tuple[Evaluator, Any, int, float, float]
RulePlan = dict[str, tuple[Step, ...]]

# Page views raise friction_spike only when they are a server error (error_kind), and
# browse_intent only when they name a product: their plans are split by those two facts.
PAGE_VIEW = "page_view"
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
            )
        cand = fn(st, facts, cfg)
        if cand is not None:
            out.append(cand)
    return out


def cart_candidate(
    cart: tuple[float, float, str, str, float, str], r: CartRecoveryRule
) -> Candidate:
    """The cart_recovery alert for a pending cart whose deadline passed without a purchase."""
    due, t, event_id, cart_id, value, currency = cart
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=due,
        evidence=[event_id],
        action=(
            f"Send a cart reminder for cart {cart_id} ({value:.2f} {currency}), e.g. with free "
            "shipping."
        ),
        context={
            "cart_id": cart_id,
            "cart_value": value,
            "currency": currency,
            "abandoned_at": _iso(t),
            "wait_minutes": r.params.wait_minutes,
        },
    )
