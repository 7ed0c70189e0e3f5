"""What makes each alert rule fire: one pure function per rule.

Each evaluator reads the state *after* the event was applied and the :class:`EventFacts`, and
returns a :class:`Candidate` (an alert before policy) or None. :data:`EVENT_RULES` lists them in
evaluation order (support rules first); :func:`cart_candidate` builds the alert of a pending
cart whose deadline passed. docs/scoring.md describes every rule in words.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from schemas.alerts import AlertKind
from schemas.event_records import (
    Event,
    PageViewEvent,
    SupportContactEvent,
    SurveyAnswerEvent,
)
from streams.core.churn import ChurnScorer
from streams.core.rounding import round_to
from streams.core.rule_config import (
    BrowseIntentRule,
    CartRecoveryRule,
    DetractorFollowUpParams,
    DetractorFollowUpRule,
    ExperienceDropRule,
    FrictionSpikeRule,
    HighValueAtRiskParams,
    HighValueAtRiskRule,
    PromoterReferralRule,
    RepeatContactRule,
    WinBackParams,
    WinBackRule,
)
from streams.core.signals import error_kind
from streams.core.state import CustomerState, short_hash
from streams.core.windows import DAY_S, HOUR_S, timed_between

_NO_IDS: list[str] = []  # placeholders of a candidate built when read (never mutated)
_NO_CONTEXT: dict[str, Any] = {}

# Candidate and EventFacts are plain classes rather than dataclasses: they are built on the hot
# path, and a compiled dataclass still runs the interpreted ``__init__`` of ``dataclasses``.


# What a deferred candidate's details are made of when first read: evidence, action, context.
Details = tuple[list[str], str, dict[str, Any]]


class Candidate:
    """An alert that a rule wants to send, before the policy decides.

    ``details``, when given, builds the evidence, action and context the first time one of them
    is read (from values it captured when the rule fired, never from the state as it is later):
    most candidates of a customer who stays below the day's peak score are suppressed by the
    rule's cooldown, and the worker then only counts them (a suppressed candidate's alert id is
    computed from its evidence only if read).
    """

    __slots__ = ("rule", "kind", "event_time", "_evidence", "_action", "_context", "id_extra",
                 "_details")

    def __init__(self, rule: str, kind: AlertKind, event_time: float, evidence: list[str],
                 action: str, context: dict[str, Any], id_extra: str | None = None,
                 details: Callable[[], Details] | None = None) -> None:
        self.rule = rule
        self.kind = kind
        self.event_time = event_time
        self._evidence = evidence
        self._action = action
        self._context = context
        # Named into the alert id after the evidence: an alert with no triggering event (an
        # idle customer's re-evaluation) is told apart from another with the same evidence.
        self.id_extra = id_extra
        self._details = details

    def _build(self) -> None:
        details = self._details
        if details is not None:
            self._details = None
            self._evidence, self._action, self._context = details()

    @property
    def evidence(self) -> list[str]:
        self._build()
        return self._evidence

    @property
    def action(self) -> str:
        self._build()
        return self._action

    @property
    def context(self) -> dict[str, Any]:
        self._build()
        return self._context

    @property
    def built(self) -> bool:
        """Whether evidence, action and context exist yet (False: built when first read)."""
        return self._details is None

    def __repr__(self) -> str:
        return f"Candidate({self.rule!r}, {self.kind!r}, {self.event_time!r}, {self.evidence!r})"


class EventFacts:
    """What the rules need to know about the event just applied."""

    __slots__ = ("event", "t", "sentiment", "score_before", "score_after", "score_peak",
                 "risk_before", "risk_after", "spend_before", "product_key", "churn")

    def __init__(
        self,
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
    ) -> None:
        self.event = event
        self.t = t
        self.sentiment = sentiment
        self.score_before = score_before
        self.score_after = score_after
        # Highest score in the experience_drop window before this event; only computed when
        # the event lowered the score (otherwise score_before: an event that does not lower
        # the score does not raise experience_drop).
        self.score_peak = score_peak
        self.risk_before = risk_before
        self.risk_after = risk_after
        self.spend_before = spend_before
        self.product_key = product_key  # short_hash of a viewed product id, already computed
        self.churn = churn  # the engine's scorer: CLV and risk drivers of the state


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
            return Candidate(r.id, r.kind, f.t, _NO_IDS, "", _NO_CONTEXT,
                             details=_friction_details(inside, r.params.window_minutes))
    return None


def _friction_details(inside: list[Any], window_minutes: float) -> Callable[[], Details]:
    """A friction_spike candidate's details, built when read (Candidate) from its error
    records (``inside``: a list of its own, of the state's immutable records)."""
    def details() -> Details:
        kinds: dict[str, int] = {}
        for e in inside:
            kinds[e[2]] = kinds.get(e[2], 0) + 1
        action = (f"{len(inside)} errors or failed payments within {window_minutes:g} min: "
                  "check the customer's session and offer help completing what they were "
                  "doing.")
        return ([e[1] for e in inside], action,
                {"errors": len(inside), "by_kind": kinds, "first_at": _iso(inside[0][0])})
    return details


def _experience_drop(st: CustomerState, f: EventFacts, r: ExperienceDropRule) -> Candidate | None:
    drop = f.score_peak - f.score_after
    if drop < r.params.min_drop_points:
        return None
    assert st.watermark is not None
    horizon = st.watermark - r.params.window_hours * HOUR_S
    # Built when read (Candidate): from a copy of the kept signals as they are now.
    signals = st.signals.copy()
    event_id, hours = f.event.event_id, r.params.window_hours
    peak, after = f.score_peak, f.score_after

    def details() -> Details:
        negatives = sorted(signals.negatives(horizon))
        evidence = list(dict.fromkeys([eid for _t, eid in negatives] + [event_id]))[-10:]
        action = (f"Experience score fell {drop:.0f} points within {hours} h: review the "
                  "listed events and reach out before the customer complains.")
        return evidence, action, {"from_score": round_to(peak, 2),
                                  "to_score": round_to(after, 2)}

    return Candidate(r.id, r.kind, f.t, _NO_IDS, "", _NO_CONTEXT, details=details)


def high_value_turned_at_risk(
    st: CustomerState, p: HighValueAtRiskParams, spend_before: float, risk_before: float,
    risk_after: float,
) -> bool:
    """high_value_at_risk's test: the customer became high-value and at risk just now."""
    now_true = st.spend >= p.min_spend and risk_after >= p.min_churn_risk
    was_true = spend_before >= p.min_spend and risk_before >= p.min_churn_risk
    return now_true and not was_true


def win_back_crossed(
    st: CustomerState, p: WinBackParams, score: float, risk_before: float, risk_after: float
) -> bool:
    """win_back's test: a buyer with a good experience whose risk crossed the threshold."""
    if st.purchases < p.min_purchases or score < p.min_experience_score:
        return False
    return risk_before < p.min_churn_risk <= risk_after


def _high_value_at_risk(
    st: CustomerState, f: EventFacts, r: HighValueAtRiskRule
) -> Candidate | None:
    p = r.params
    if not high_value_turned_at_risk(st, p, f.spend_before, f.risk_before, f.risk_after):
        return None
    # High value = expected value over the next 12 months (CLV), computed only here: once the
    # risk has crossed the threshold.
    clv = f.churn.clv(st, f.t) if f.churn is not None else 0.0
    if clv < p.min_clv_12m:
        return None
    evidence = [e for e in (st.last_purchase_id, f.event.event_id) if e]
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=list(dict.fromkeys(evidence)),
        action="High-value customer at risk of churning: assign an account manager to call.",
        context={
            "lifetime_spend": round(st.spend, 2),
            "clv_12m": round(clv, 2),
            "churn_risk": round(f.risk_after, 4),
            **_churn_drivers(st, f),
        },
    )


def _churn_drivers(st: CustomerState, f: EventFacts) -> dict[str, Any]:
    """The three largest drivers of the churn risk, with their evidence (alert context)."""
    if f.churn is None:
        return {}
    return {"churn_drivers": f.churn.drivers(st, f.score_after, f.t)[:3]}


def _browse_intent(st: CustomerState, f: EventFacts, r: BrowseIntentRule) -> Candidate | None:
    ev = f.event
    if not isinstance(ev, PageViewEvent) or ev.properties.product_id is None:
        return None
    product = ev.properties.product_id
    win = r.params.window_minutes * 60
    key = f.product_key if f.product_key is not None else short_hash(product)
    found = st.views.find(key, f.t - win, f.t, r.params.min_views)
    if found is None:
        return None
    first_t, event_ids = found
    if st.last_cart is not None and st.last_cart >= first_t:
        return None
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=event_ids,
        action=f"Recommend product {product} (or similar) with a personalised message.",
        context={"product_id": product, "views": len(event_ids)},
    )


def _win_back(st: CustomerState, f: EventFacts, r: WinBackRule) -> Candidate | None:
    if not win_back_crossed(st, r.params, f.score_after, f.risk_before, f.risk_after):
        return None
    days = None if st.last_purchase is None else round((f.t - st.last_purchase) / DAY_S, 1)
    evidence = [e for e in (st.last_purchase_id, f.event.event_id) if e]
    return Candidate(
        rule=r.id,
        kind=r.kind,
        event_time=f.t,
        evidence=list(dict.fromkeys(evidence)),
        action="Send a win-back offer: the customer is drifting away but had a good experience.",
        context={
            "churn_risk": round(f.risk_after, 4),
            "days_since_last_purchase": days,
            **_churn_drivers(st, f),
        },
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


# ---------------------------------------------------------------- idle customers


def _idle_context(st: CustomerState, at_s: float, risk_before: float) -> dict[str, Any]:
    """Why an idle customer's risk rose: how long since the last purchase and the last event."""
    assert st.watermark is not None
    since_purchase = None if st.last_purchase is None else (at_s - st.last_purchase) / DAY_S
    return {
        "trigger": "inactivity",
        "risk_before": round(risk_before, 4),
        "days_since_last_purchase": None if since_purchase is None else round(since_purchase, 1),
        "days_since_last_event": round((at_s - st.watermark) / DAY_S, 1),
        "last_event_at": _iso(st.watermark),
    }


def idle_candidates(
    st: CustomerState, enabled: dict[str, Any], at_s: float, risk_before: float,
    risk_after: float, clv_12m: Callable[[], float] | None = None,
) -> list[Candidate]:
    """Candidates raised by an idle customer's risk moving from ``risk_before`` to
    ``risk_after`` at ``at_s`` with no new event (support rules first, as for events): the
    same tests as ``high_value_at_risk`` and ``win_back`` on an event, with the inactivity as
    the reason. Evidence: the last purchase (what the customer stopped doing); the alert id
    also names the watermark, so each idle spell raises a rule at most once. ``clv_12m``
    computes the customer's expected 12-month value (high_value_at_risk's gate), called only
    once that rule's risk test passed."""
    out: list[Candidate] = []
    if st.watermark is None:
        return out
    evidence = [st.last_purchase_id] if st.last_purchase_id else []
    spell = f"idle-since:{st.watermark!r}"

    def idle(rule: Any, action: str, context: dict[str, Any]) -> Candidate:
        return Candidate(rule=rule.id, kind=rule.kind, event_time=at_s, evidence=list(evidence),
                         action=action, context=context, id_extra=spell)

    hv = enabled.get("high_value_at_risk")
    if isinstance(hv, HighValueAtRiskRule) and high_value_turned_at_risk(
        st, hv.params, st.spend, risk_before, risk_after
    ):
        clv = clv_12m() if clv_12m is not None else 0.0
        if clv >= hv.params.min_clv_12m:
            context = _idle_context(st, at_s, risk_before)
            out.append(idle(
                hv,
                "High-value customer at risk of churning after "
                f"{context['days_since_last_event']:g} days without activity: assign an "
                "account manager to call.",
                {"lifetime_spend": round(st.spend, 2), "clv_12m": round(clv, 2),
                 "churn_risk": round(risk_after, 4), **context},
            ))
    wb = enabled.get("win_back")
    if isinstance(wb, WinBackRule) and win_back_crossed(
        st, wb.params, st.score, risk_before, risk_after
    ):
        context = _idle_context(st, at_s, risk_before)
        days = context["days_since_last_purchase"]
        quiet = (f"no purchase for {days:g} days" if days is not None else
                 f"no activity for {context['days_since_last_event']:g} days")
        out.append(idle(
            wb,
            f"Send a win-back offer: {quiet} raised the churn risk from "
            f"{risk_before:.2f} to {risk_after:.2f} with no new event, after a good "
            "experience.",
            {"churn_risk": round(risk_after, 4), **context},
        ))
    return out
