"""Signals: what one touchpoint event says about the customer's experience, in score points.

A signal is ``(name, weight)``; the weight is in experience-score points near neutral (a -4 signal
moves a customer at 50 to about 46). Negative weights are friction, positive weights good moments.
Friction at a moment of truth (checkout, payment, delivery, or a customer's first support contact
in 24 h) weighs ``moment_of_truth_factor`` times more. docs/scoring.md lists every weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from schemas.event_records import (
    AppErrorEvent,
    CartAbandonEvent,
    Event,
    PageViewEvent,
    PaymentFailedEvent,
    PurchaseEvent,
    SupportContactEvent,
    SurveyAnswerEvent,
)


@dataclass(frozen=True, slots=True)
class SignalWeights:
    """Weights in score points. Survey tables are indexed by answer minus the scale's low end."""

    # Floats, not ints: the state stores weights as floats, and a state must encode the same
    # before and after a round trip. NPS answers 0..10:
    nps: tuple[float, ...] = (-14.0, -13.0, -12.0, -11.0, -10.0, -9.0, -8.0, 0.0, 0.0, 6.0, 8.0)
    csat: tuple[float, ...] = (-8.0, -4.0, 0.0, 3.0, 6.0)  # answers 1..5
    ces: tuple[float, ...] = (-8.0, -5.0, -2.0, 0.0, 2.0, 4.0, 6.0)  # answers 1..7
    comment_per_unit: float = 8.0  # times VADER compound in [-1, 1]
    comment_neutral_abs: float = 0.05  # |compound| below this is neutral (VADER convention)
    page_5xx: float = -2.0
    page_4xx: float = -1.0
    slow_load: float = -1.0
    slow_load_ms: int = 3000
    app_error: float = -2.0
    payment_failed: float = -4.0
    cart_abandon: float = -1.5
    support_contact: float = -2.0
    unresolved: float = -3.0
    repeated_contact: float = -2.0
    long_wait: float = -1.5
    long_wait_s: float = 300.0
    purchase: float = 3.0
    first_contact_resolution: float = 1.0  # less than the contact's own cost: net stays < 0
    moment_of_truth_factor: float = 1.5
    moments_of_truth: tuple[str, ...] = ("checkout", "payment", "delivery")


Signal = tuple[str, float]

SURVEY_LOW: Final = {"nps": 0, "csat": 1, "ces": 1}


def is_moment_of_truth(event: Event, w: SignalWeights) -> bool:
    """Checkout, payment and delivery touchpoints (substring match) and every payment failure."""
    if isinstance(event, PaymentFailedEvent):
        return True
    tp = event.touchpoint
    if not tp:
        return False
    tp = tp.lower()
    return any(m in tp for m in w.moments_of_truth)


def error_kind(event: Event) -> str | None:
    """The kind of error counted by the friction_spike rule, or None."""
    if isinstance(event, PageViewEvent):
        status = event.properties.http_status
        return "error_page" if status is not None and status >= 500 else None
    if isinstance(event, AppErrorEvent):
        return "app_error"
    if isinstance(event, PaymentFailedEvent):
        return "payment_failed"
    return None


def survey_signal(event: SurveyAnswerEvent, w: SignalWeights) -> Signal:
    p = event.properties
    table = {"nps": w.nps, "csat": w.csat, "ces": w.ces}[p.survey]
    weight = table[p.score - SURVEY_LOW[p.survey]]
    if p.survey == "nps":
        name = (
            "nps_promoter" if p.score >= 9 else "nps_passive" if p.score >= 7 else "nps_detractor"
        )
    else:
        name = p.survey
    return name, weight


def event_signals(
    event: Event,
    w: SignalWeights,
    *,
    repeated_contact: bool = False,
    sentiment: float | None = None,
) -> list[Signal]:
    """The signals of one event.

    ``repeated_contact``: the customer had another support contact in the 24 h before this one.
    ``sentiment``: VADER compound of the event's comment, if it had one.
    Guarantee (relied on by the monotonicity tests): every signal of a page error/slow page,
    app error, payment failure, cart abandon or support contact is negative, and a support
    contact's signals sum to less than zero even when it was resolved at first contact.
    """
    out: list[Signal] = []
    if isinstance(event, SurveyAnswerEvent):
        out.append(survey_signal(event, w))
        if sentiment is not None and abs(sentiment) >= w.comment_neutral_abs:
            name = "positive_comment" if sentiment > 0 else "negative_comment"
            out.append((name, w.comment_per_unit * sentiment))
        return out
    if isinstance(event, PurchaseEvent):
        return [("purchase", w.purchase)]
    if isinstance(event, PageViewEvent):
        pp = event.properties
        if pp.http_status is not None and pp.http_status >= 500:
            out.append(("error_page", w.page_5xx))
        elif pp.http_status is not None and pp.http_status >= 400:
            out.append(("not_found_page", w.page_4xx))
        if pp.load_time_ms is not None and pp.load_time_ms >= w.slow_load_ms:
            out.append(("slow_page", w.slow_load))
    elif isinstance(event, AppErrorEvent):
        out.append(("app_error", w.app_error))
    elif isinstance(event, PaymentFailedEvent):
        out.append(("payment_failed", w.payment_failed))
    elif isinstance(event, CartAbandonEvent):
        out.append(("cart_abandon", w.cart_abandon))
    elif isinstance(event, SupportContactEvent):
        sp = event.properties
        out.append(("support_contact", w.support_contact))
        if not sp.resolved:
            out.append(("unresolved_contact", w.unresolved))
        if repeated_contact:
            out.append(("repeated_contact", w.repeated_contact))
        if sp.wait_s is not None and sp.wait_s >= w.long_wait_s:
            out.append(("long_wait", w.long_wait))
    if not out:
        return out
    # The first support contact in 24 h is a moment of truth: it decides how the issue is felt.
    first_contact = isinstance(event, SupportContactEvent) and not repeated_contact
    if first_contact or is_moment_of_truth(event, w):
        factor = w.moment_of_truth_factor
        out = [(name, weight * factor) for name, weight in out]
    if first_contact and isinstance(event, SupportContactEvent) and event.properties.resolved:
        out.append(("first_contact_resolution", w.first_contact_resolution))
    return out
