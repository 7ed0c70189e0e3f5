"""Personas and segments of simulated customers.

A persona fixes how a simulated customer behaves: which channels they use, how often they buy,
abandon, meet friction, contact support and answer surveys, and how they feel by default. The
``segment`` is what the simulator writes into the event envelope, so dashboards can be cut by it.
Propensities are probabilities per opportunity (per session, per checkout, ...), all in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import Channel

# IANA time zone, its UTC offset in seconds (standard time; DST is ignored on purpose: the
# simulator only uses the offset to keep customers mostly awake), and the currency they pay in.
TIMEZONES: tuple[tuple[str, int, str], ...] = (
    ("Europe/Berlin", 3600, "EUR"),
    ("Europe/Paris", 3600, "EUR"),
    ("Europe/London", 0, "GBP"),
    ("America/New_York", -5 * 3600, "USD"),
    ("America/Los_Angeles", -8 * 3600, "USD"),
    ("Asia/Tokyo", 9 * 3600, "JPY"),
    ("Australia/Sydney", 10 * 3600, "AUD"),
)


@dataclass(frozen=True)
class Persona:
    """How one kind of customer behaves.

    ``browse_channels`` and ``support_channels`` are (channel, weight) pairs; weights need not sum
    to 1. ``mood`` shifts survey answers on a -1 (grumpy) .. +1 (delighted) scale before friction
    is taken into account.
    """

    name: str
    segment: str
    weight: float  # share of the customer base, relative to the other personas
    browse_channels: tuple[tuple[Channel, float], ...]
    support_channels: tuple[tuple[Channel, float], ...]
    timezones: tuple[int, ...]  # indexes into TIMEZONES
    activity: float  # relative chance to start a session when picked
    p_anonymous_start: float  # starts as an unknown visitor (anonymous_id only)
    p_buy_intent: float  # a consideration session moves on to checkout
    p_abandon: float  # a started checkout is abandoned
    p_recover: float  # a later session comes back and buys the abandoned cart
    p_friction: float  # a touchpoint goes wrong (slow page, 5xx, app error, failed payment)
    p_support: float  # a usage session needs support
    p_resolved: float  # a support contact solves the problem
    p_survey: float  # answers a survey after a purchase or support contact
    mood: float
    order_value_mean: float  # in the customer's currency, before the JPY scale-up


PERSONAS: tuple[Persona, ...] = (
    Persona(
        name="bargain_hunter",
        segment="bargain_hunters",
        weight=0.25,
        browse_channels=(
            (Channel.web, 5),
            (Channel.app, 2),
            (Channel.email, 2),
            (Channel.social, 1),
        ),
        support_channels=((Channel.chat, 3), (Channel.email, 2)),
        timezones=(0, 1, 2, 3, 4),
        activity=1.0,
        p_anonymous_start=0.5,
        p_buy_intent=0.45,
        p_abandon=0.55,
        p_recover=0.5,
        p_friction=0.10,
        p_support=0.10,
        p_resolved=0.75,
        p_survey=0.35,
        mood=0.0,
        order_value_mean=45.0,
    ),
    Persona(
        name="loyal_regular",
        segment="loyal_regulars",
        weight=0.25,
        browse_channels=(
            (Channel.app, 5),
            (Channel.web, 2),
            (Channel.store, 2),
            (Channel.email, 1),
        ),
        support_channels=((Channel.chat, 2), (Channel.call_center, 1)),
        timezones=(0, 2, 3, 5),
        activity=1.2,
        p_anonymous_start=0.05,
        p_buy_intent=0.65,
        p_abandon=0.15,
        p_recover=0.7,
        p_friction=0.05,
        p_support=0.08,
        p_resolved=0.9,
        p_survey=0.4,
        mood=0.6,
        order_value_mean=70.0,
    ),
    Persona(
        name="frustrated_support_heavy",
        segment="support_heavy",
        weight=0.15,
        browse_channels=((Channel.app, 3), (Channel.web, 3)),
        support_channels=((Channel.call_center, 4), (Channel.chat, 2), (Channel.email, 1)),
        timezones=(1, 2, 3, 4, 6),
        activity=1.1,
        p_anonymous_start=0.1,
        p_buy_intent=0.4,
        p_abandon=0.3,
        p_recover=0.3,
        p_friction=0.35,
        p_support=0.6,
        p_resolved=0.4,
        p_survey=0.6,
        mood=-0.3,
        order_value_mean=55.0,
    ),
    Persona(
        name="window_shopper",
        segment="browsers",
        weight=0.2,
        browse_channels=((Channel.web, 4), (Channel.social, 3), (Channel.app, 1)),
        support_channels=((Channel.chat, 1),),
        timezones=(0, 2, 3, 4, 5, 6),
        activity=0.8,
        p_anonymous_start=0.8,
        p_buy_intent=0.0,  # browses, never buys
        p_abandon=1.0,
        p_recover=0.0,
        p_friction=0.08,
        p_support=0.0,
        p_resolved=1.0,
        p_survey=0.1,
        mood=0.1,
        order_value_mean=0.0,
    ),
    Persona(
        name="high_value",
        segment="vip",
        weight=0.15,
        browse_channels=((Channel.web, 3), (Channel.app, 3), (Channel.store, 3)),
        support_channels=((Channel.call_center, 2), (Channel.chat, 2)),
        timezones=(0, 1, 3, 5, 6),
        activity=1.0,
        p_anonymous_start=0.02,
        p_buy_intent=0.6,
        p_abandon=0.2,
        p_recover=0.8,
        p_friction=0.06,
        p_support=0.15,
        p_resolved=0.85,
        p_survey=0.5,
        mood=0.4,
        order_value_mean=400.0,
    ),
)

PERSONA_BY_NAME: dict[str, Persona] = {p.name: p for p in PERSONAS}
