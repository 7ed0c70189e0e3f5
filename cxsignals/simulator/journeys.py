"""The journey generator: a pure, seeded stream of touchpoint messages (no Kafka here).

Customers with personas walk the journey stages (awareness -> consideration -> purchase -> usage
-> loyalty) in sessions over channels and touchpoints. Friction is injected (slow pages, 5xx page
views, app errors, failed payments, abandoned carts, long waits, unresolved and repeated support
contacts); survey answers follow the friction a customer met, with a matching comment; some
abandoned carts are bought later under the same ``cart_id``; some customers start anonymous and
are stitched to their customer_id by an event carrying both ids.

Guarantees of :func:`generate`:

- Same :class:`SimConfig` (seed AND start included) = byte-identical messages in the same order.
  The default ``start`` is "now, rounded down to the second", so pass ``start`` explicitly to
  reproduce a run.
- Event time never decreases over the whole stream, so each customer's events are in
  non-decreasing event time; sessions of different customers are interleaved.
- Every good message validates against ``schemas.events.touchpoint_adapter``; every bad one breaks
  exactly one rule and names its dead-letter code in ``expected_error``.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, TypeVar

import orjson

from cxsignals.simulator.bad import BAD_CODES, bad_value
from cxsignals.simulator.comments import comment_for
from cxsignals.simulator.personas import PERSONAS, TIMEZONES, Persona
from schemas.events import SCHEMA_VERSION, SURVEY_SCALES, Channel

_T = TypeVar("_T")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SHOP = "https://shop.example.com"

AWARENESS, CONSIDERATION, PURCHASE, USAGE, LOYALTY = range(5)
STAGE_NAMES = ("awareness", "consideration", "purchase", "usage", "loyalty")

# Friction weights: how much a pain point moves a customer's frustration. Checkout and support
# are moments of truth, so failures there weigh more than a slow page.
PAIN_WEIGHT: dict[str, float] = {
    "slow_page": 0.5,
    "server_error": 0.7,
    "app_error": 0.7,
    "payment_failed": 1.0,
    "cart_abandon": 0.3,
    "long_wait": 0.6,
    "unresolved": 0.9,
    "repeated_contact": 0.7,
}
SLOW_PAGE_MS = 3000  # a page slower than this is a pain point
LONG_WAIT_S = 900.0  # a support wait longer than this is a pain point
FRICTION_DECAY = 0.6  # frustration kept from one session to the next
MAX_PAINS = 5  # pain points remembered for survey comments

SUPPORT_TOUCHPOINT = {"call_center": "hotline", "chat": "live_chat", "email": "email_support"}
SUPPORT_WAIT_MEAN_S = {"call_center": 240.0, "chat": 90.0, "email": 4 * 3600.0}
REASON_FOR_PAIN = {
    "payment_failed": "payment_problem",
    "app_error": "app_not_working",
    "server_error": "website_error",
    "slow_page": "website_error",
    "cart_abandon": "shipping_costs",
}
OTHER_REASONS = ("delivery_late", "order_status", "refund_request", "product_defect", "account")
# Version 4 and the RFC 4122 variant, set on 128 random bits.
_UUID_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_SET = (4 << 76) | (0x2 << 62)
CURRENCY_SCALE = {"JPY": 150.0}  # order values are persona means in EUR-like units

# (etype, customer_id, anonymous_id, channel, touchpoint, journey_stage, properties)
Planned = tuple[str, str | None, str | None, str, str, str | None, dict[str, Any]]


def _now_to_second() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    ``start``: event time of the first message (aware; truncated to the millisecond).
    ``total_events``: messages to produce, bad ones included; None = unbounded.
    ``event_gap_s``: mean event-time gap between consecutive messages (exponential gaps), so
    event time can run faster than wall time for backfills. ``bad_share``: expected share of
    deliberately bad messages, 0-1.
    """

    customers: int = 200
    seed: int = 42
    start: datetime = field(default_factory=_now_to_second)
    total_events: int | None = None
    event_gap_s: float = 0.02
    bad_share: float = 0.01

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be >= 1, got {self.customers}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware, e.g. 2026-11-23T10:00:00Z")
        if self.total_events is not None and self.total_events < 0:
            raise ValueError(f"total_events must be >= 0, got {self.total_events}")
        if not self.event_gap_s >= 0:
            raise ValueError(f"event_gap_s must be >= 0, got {self.event_gap_s}")
        if not 0.0 <= self.bad_share <= 1.0:
            raise ValueError(f"bad_share must be within 0-1, got {self.bad_share}")


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One Kafka message: key and value bytes as published, plus what the test harness needs."""

    key: bytes
    value: bytes
    event_time: datetime
    is_bad: bool
    expected_error: str | None


class _Customer:
    __slots__ = (
        "customer_id", "anonymous_id", "known", "persona", "timezone", "tz_offset_s", "currency",
        "stage", "friction", "pains", "abandoned_cart", "open_issue", "usage_sessions",
        "session_id", "queue",
    )  # fmt: skip

    def __init__(
        self, number: int, persona: Persona, tz_index: int, anonymous_id: str | None
    ) -> None:
        self.customer_id = f"c-{number}"
        self.anonymous_id = anonymous_id
        self.known = anonymous_id is None
        self.persona = persona
        self.timezone, self.tz_offset_s, self.currency = TIMEZONES[tz_index]
        self.stage = AWARENESS
        self.friction = 0.0  # frustration; decays between sessions
        self.pains: list[str] = []  # pain points behind the current frustration, latest last
        self.abandoned_cart: tuple[str, float, int] | None = None  # cart_id, value, items
        self.open_issue: tuple[str, int] | None = None  # reason, contacts so far
        self.usage_sessions = 0
        self.session_id = ""
        self.queue: deque[Planned] = deque()

    @property
    def ids(self) -> tuple[str | None, str | None]:
        """(customer_id, anonymous_id) as the next event carries them."""
        return (self.customer_id, None) if self.known else (None, self.anonymous_id)

    @property
    def key(self) -> str:
        return self.customer_id if self.known else str(self.anonymous_id)


def _cum(pairs: tuple[tuple[Channel, float], ...]) -> tuple[tuple[str, ...], list[float]]:
    return tuple(ch.value for ch, _ in pairs), list(accumulate(w for _, w in pairs))


class _Journeys:
    """Plans sessions: appends the events of one session to a customer's queue.

    All randomness comes from the one seeded ``rng``; planning mutates the customer's state
    (stage, frustration, carts, issues) at planning time, which is safe because a customer's
    next session is only planned once the previous one has been emitted.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # rng.random() based picks: several times faster than randrange/choice/choices, which
        # matters at 100k+ events/s; still fully determined by the seed.
        self.rand = rng.random
        self.persona_cum = list(accumulate(p.weight for p in PERSONAS))
        self.view_channels: dict[str, tuple[tuple[str, ...], list[float]]] = {}
        self.buy_channels: dict[str, tuple[tuple[str, ...], list[float]]] = {}
        self.support_channels: dict[str, tuple[tuple[str, ...], list[float]]] = {}
        page_channels = {Channel.web, Channel.app, Channel.social, Channel.email}
        buy = {Channel.web, Channel.app, Channel.store}
        for p in PERSONAS:
            self.view_channels[p.name] = _cum(
                tuple(pair for pair in p.browse_channels if pair[0] in page_channels)
            )
            self.buy_channels[p.name] = _cum(
                tuple(pair for pair in p.browse_channels if pair[0] in buy)
            )
            self.support_channels[p.name] = _cum(p.support_channels)

    # -- ids ----------------------------------------------------------------------------------

    def hex_id(self, prefix: str) -> str:
        return f"{prefix}{self.rng.getrandbits(48):012x}"

    def uuid4(self) -> str:
        h = f"{self.rng.getrandbits(128) & _UUID_KEEP | _UUID_SET:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    # -- customers ----------------------------------------------------------------------------

    def new_customer(self, number: int) -> _Customer:
        rng = self.rng
        persona = rng.choices(PERSONAS, cum_weights=self.persona_cum)[0]
        tz_index = rng.choice(persona.timezones)
        anonymous = self.hex_id("a-") if rng.random() < persona.p_anonymous_start else None
        return _Customer(number, persona, tz_index, anonymous)

    def between(self, low: int, high: int) -> int:
        """A uniform int in [low, high]."""
        return low + int(self.rand() * (high - low + 1))

    def pick(self, seq: tuple[_T, ...]) -> _T:
        return seq[int(self.rand() * len(seq))]

    def _pick(self, table: dict[str, tuple[tuple[str, ...], list[float]]], c: _Customer) -> str:
        names, cum = table[c.persona.name]
        return names[bisect(cum, self.rand() * cum[-1])]

    def _pain(self, c: _Customer, pain: str) -> None:
        c.friction += PAIN_WEIGHT[pain]
        c.pains.append(pain)
        if len(c.pains) > MAX_PAINS:  # bounded memory in unbounded runs
            del c.pains[0]

    def _add(
        self,
        c: _Customer,
        etype: str,
        channel: str,
        touchpoint: str,
        stage: int | None,
        props: dict[str, Any],
    ) -> None:
        cid, aid = c.ids
        stage_name = STAGE_NAMES[stage] if stage is not None else None
        c.queue.append((etype, cid, aid, channel, touchpoint, stage_name, props))

    def _money(self, c: _Customer, mean: float) -> float:
        value = max(1.0, self.rng.gammavariate(2.0, mean / 2.0))
        return round(value * CURRENCY_SCALE.get(c.currency, 1.0), 2)

    # -- building blocks ----------------------------------------------------------------------

    def _page_view(
        self,
        c: _Customer,
        channel: str,
        touchpoint: str,
        stage: int,
        path: str,
        product_id: str | None = None,
    ) -> None:
        rng = self.rng
        load_ms = int(math.exp(6.2 + 0.5 * rng.gauss(0.0, 1.0)))  # median ~500 ms, rarely slow
        status = 200
        app_error = False
        if self.rand() < c.persona.p_friction:
            roll = self.rand()
            if roll < 0.5:
                load_ms = self.between(SLOW_PAGE_MS + 1, 12_000)
                self._pain(c, "slow_page")
            elif channel == "app":
                app_error = True
            else:
                status = self.pick((500, 502, 503, 504))
                self._pain(c, "server_error")
        base = "app://shop" if channel == "app" else SHOP
        props: dict[str, Any] = {"url": base + path, "load_time_ms": load_ms, "http_status": status}
        if product_id is not None:
            props["product_id"] = product_id
        self._add(c, "page_view", channel, touchpoint, stage, props)
        if app_error:
            self._pain(c, "app_error")
            code = self.pick(("E_CRASH", "E_TIMEOUT", "E_LOGIN", "E_RENDER"))
            self._add(
                c,
                "app_error",
                channel,
                touchpoint,
                stage,
                {"error_code": code, "message": f"{code} on {touchpoint}", "screen": touchpoint},
            )

    def _identify(self, c: _Customer, channel: str, touchpoint: str, method: str) -> None:
        if c.known:
            return
        c.known = True
        # The one event carrying both ids: it stitches the anonymous history to the customer.
        c.queue.append(
            (
                "identify",
                c.customer_id,
                c.anonymous_id,
                channel,
                touchpoint,
                STAGE_NAMES[c.stage],
                {"email_hash": f"{self.rng.getrandbits(128):032x}", "method": method},
            )
        )

    def _survey(
        self,
        c: _Customer,
        survey: str,
        channel: str,
        touchpoint: str,
        stage: int,
        after_support: bool = False,
    ) -> None:
        rng = self.rng
        low, high = SURVEY_SCALES[survey]
        happiness = 0.74 + 0.16 * c.persona.mood - 0.22 * min(c.friction, 2.5)
        happiness = min(1.0, max(0.0, happiness + rng.gauss(0.0, 0.12)))
        props: dict[str, Any] = {"survey": survey, "score": low + round(happiness * (high - low))}
        if happiness < 0.35 or self.rand() < 0.6:
            props["comment"] = comment_for(rng, happiness, c.pains, after_support)
        self._add(c, "survey_answer", channel, touchpoint, stage, props)

    def _checkout(self, c: _Customer, recovering: bool = False) -> None:
        p = c.persona
        channel = "web" if recovering else self._pick(self.buy_channels, c)
        if channel == "store":
            self._identify(c, "store", "store_checkout", "loyalty_card")
            value = self._money(c, p.order_value_mean)
            if self.rand() < p.p_friction:
                self._pain(c, "payment_failed")
                self._add(
                    c,
                    "payment_failed",
                    "store",
                    "store_checkout",
                    None,  # the till does not know journey stages: the pipeline derives them
                    {"order_value": value, "currency": c.currency, "reason": "card_declined"},
                )
            order = {"order_id": self.hex_id("o-"), "order_value": value, "currency": c.currency}
            self._add(c, "purchase", "store", "store_checkout", None, order)
            self._bought(c, "store", "store_checkout")
            return

        if recovering and c.abandoned_cart is not None:
            cart_id, value, items = c.abandoned_cart
        else:
            items = self.between(1, 5)
            value = self._money(c, p.order_value_mean * (0.6 + 0.2 * items))
            cart_id = self.hex_id("cart-")
        self._page_view(c, channel, "cart", PURCHASE, "/cart")
        self._identify(c, channel, "login", "login")
        cart = {"cart_id": cart_id, "cart_value": value, "currency": c.currency}
        self._add(c, "checkout_started", channel, "checkout", PURCHASE, cart)

        p_abandon = p.p_abandon * (0.3 if recovering else 1.0)
        if self.rand() < p.p_friction * 1.5:
            failures = 2 if self.rand() < 0.4 else 1
            for _ in range(failures):
                self._pain(c, "payment_failed")
                reason = self.pick(("card_declined", "3ds_timeout", "gateway_error"))
                failed = {**cart, "order_value": value, "reason": reason}
                del failed["cart_value"]
                self._add(c, "payment_failed", channel, "checkout", PURCHASE, failed)
            p_abandon = min(0.95, p_abandon + 0.4)
        if self.rand() < p_abandon:
            self._pain(c, "cart_abandon")
            abandon = {**cart, "items": items}
            self._add(c, "cart_abandon", channel, "checkout", PURCHASE, abandon)
            c.abandoned_cart = (cart_id, value, items)
            return
        order = {
            "order_id": self.hex_id("o-"),
            "order_value": value,
            "currency": c.currency,
            "cart_id": cart_id,
        }
        self._add(c, "purchase", channel, "checkout", PURCHASE, order)
        if recovering:
            c.abandoned_cart = None
        self._bought(c, channel, "checkout")

    def _bought(self, c: _Customer, channel: str, touchpoint: str) -> None:
        if c.stage < USAGE:
            c.stage = USAGE
        if self.rand() < c.persona.p_survey:
            survey = "csat" if self.rand() < 0.6 else "nps"
            self._survey(c, survey, channel, touchpoint, PURCHASE)

    def _support(self, c: _Customer) -> None:
        rng = self.rng
        p = c.persona
        channel = self._pick(self.support_channels, c)
        touchpoint = SUPPORT_TOUCHPOINT[channel]
        contacts_today = 0
        while True:
            if c.open_issue is not None:
                reason, contacts = c.open_issue
                self._pain(c, "repeated_contact")
            else:
                known_pains = [REASON_FOR_PAIN[x] for x in c.pains if x in REASON_FOR_PAIN]
                reason = known_pains[-1] if known_pains else self.pick(OTHER_REASONS)
                contacts = 0
            mean_wait_s = SUPPORT_WAIT_MEAN_S[channel] * (3.0 if p.p_friction > 0.2 else 1.0)
            wait_s = round(rng.expovariate(1.0 / mean_wait_s), 1)
            if wait_s > LONG_WAIT_S:
                self._pain(c, "long_wait")
            resolved = self.rand() < p.p_resolved
            props = {
                "contact_id": self.hex_id("k-"),
                "reason": reason,
                "resolved": resolved,
                "wait_s": wait_s,
            }
            stage = None if channel == "call_center" else USAGE  # the desk sends no stage
            self._add(c, "support_contact", channel, touchpoint, stage, props)
            contacts_today += 1
            if resolved:
                c.open_issue = None
                break
            self._pain(c, "unresolved")
            c.open_issue = (reason, contacts + 1)
            # Some call straight back on the same day: repeated contacts in one session.
            if contacts_today >= 3 or self.rand() >= 0.3:
                break
        if self.rand() < p.p_survey:
            survey = "ces" if self.rand() < 0.5 else "csat"
            self._survey(c, survey, channel, touchpoint, USAGE, after_support=True)

    # -- sessions -----------------------------------------------------------------------------

    def plan_session(self, c: _Customer) -> None:
        """Append one session's events to ``c.queue`` and advance the customer's journey."""
        c.friction *= FRICTION_DECAY
        if c.friction < 0.15:
            c.pains.clear()
        c.session_id = self.hex_id("s-")
        p = c.persona
        if c.open_issue is not None and self.rand() < 0.7:
            self._support(c)  # following up an unresolved issue
        elif c.abandoned_cart is not None and self.rand() < p.p_recover:
            cart_id = c.abandoned_cart[0]
            self._page_view(c, "email", "cart_reminder", PURCHASE, f"/cart?recover={cart_id}")
            self._checkout(c, recovering=True)
        elif c.stage == AWARENESS:
            self._discover(c)
        elif c.stage == CONSIDERATION:
            self._consider(c)
        elif c.stage == USAGE:
            self._use(c)
        else:
            self._loyal(c)
        if c.abandoned_cart is not None and self.rand() < 0.1:
            c.abandoned_cart = None  # the cart expired: never bought

    def _discover(self, c: _Customer) -> None:
        channel = self._pick(self.view_channels, c)
        for _ in range(self.between(1, 3)):
            touchpoint = self.pick(("home", "search", "campaign"))
            self._page_view(c, channel, touchpoint, AWARENESS, f"/{touchpoint}")
        if not c.known and self.rand() < 0.25:
            self._identify(c, channel, "signup", "newsletter_signup")
        if self.rand() < 0.7:
            c.stage = CONSIDERATION

    def _consider(self, c: _Customer, stage: int = CONSIDERATION) -> None:
        channel = self._pick(self.view_channels, c)
        for _ in range(self.between(2, 6)):
            product_id = f"p-{self.between(1, 400)}"
            self._page_view(c, channel, "product", stage, f"/p/{product_id}", product_id)
        if self.rand() < c.persona.p_buy_intent:
            self._checkout(c)

    def _use(self, c: _Customer) -> None:
        channel = self._pick(self.view_channels, c)
        friction_before = c.friction
        for _ in range(self.between(1, 3)):
            touchpoint = self.pick(("orders", "account", "delivery_tracking"))
            self._page_view(c, channel, touchpoint, USAGE, f"/{touchpoint}")
        met_friction = c.friction > friction_before
        if self.rand() < c.persona.p_support or (met_friction and self.rand() < 0.5):
            self._support(c)
        c.usage_sessions += 1
        if c.usage_sessions >= 2 and self.rand() < 0.4:
            c.stage = LOYALTY

    def _loyal(self, c: _Customer) -> None:
        roll = self.rand()
        if roll < 0.45:
            self._consider(c, stage=LOYALTY)
        elif roll < 0.75:
            self._use(c)
        else:
            self._survey(c, "nps", "email", "nps_email", LOYALTY)
            if c.friction < 0.2 and self.rand() < 0.3:
                self._page_view(c, "social", "review", LOYALTY, "/reviews/new")


def generate(config: SimConfig) -> Iterator[SimMessage]:
    """Yield the simulated messages for ``config``, lazily (unbounded when total_events is None).

    Pure: no I/O, no wall clock (except SimConfig's default start); see the module docstring
    for the determinism and ordering guarantees.
    """
    rng = random.Random(config.seed)
    rand = rng.random
    world = _Journeys(rng)
    customers = [world.new_customer(n) for n in range(1, config.customers + 1)]
    idle = list(range(len(customers)))
    active: list[int] = []
    # Concurrent sessions: enough to interleave customers, few enough that sessions stay short.
    target_active = max(1, min(len(customers), 1000, len(customers) // 10))

    start_ms = (config.start - EPOCH) // timedelta(milliseconds=1)
    clock_ms = float(start_ms)
    gap_rate = 1.0 / (config.event_gap_s * 1000.0) if config.event_gap_s > 0 else 0.0
    bad_share = config.bad_share
    total = config.total_events
    dumps = orjson.dumps
    stamp_second = -1
    stamp_prefix = ""
    produced = 0
    bad_count = 0

    while total is None or produced < total:
        produced += 1
        if gap_rate:
            clock_ms += rng.expovariate(gap_rate)
        now_ms = int(clock_ms)
        if now_ms // 1000 != stamp_second:
            stamp_second = now_ms // 1000
            stamp_prefix = (EPOCH + timedelta(seconds=stamp_second)).strftime("%Y-%m-%dT%H:%M:%S")
        occurred_at = f"{stamp_prefix}.{now_ms % 1000:03d}Z"
        event_time = EPOCH + timedelta(milliseconds=now_ms)

        if bad_share and rand() < bad_share:
            c = customers[_below(rand, len(customers))]
            code = BAD_CODES[bad_count % len(BAD_CODES)]
            bad_count += 1
            cid, aid = c.ids
            template = {
                "event_id": world.uuid4(),
                "event_type": "page_view",
                "schema_version": SCHEMA_VERSION,
                "occurred_at": occurred_at,
                "customer_id": cid,
                "anonymous_id": aid,
                "session_id": world.hex_id("s-"),
                "channel": "web",
                "touchpoint": "home",
                "journey_stage": "awareness",
                "segment": c.persona.segment,
                "timezone": c.timezone,
                "properties": {"url": SHOP + "/home", "load_time_ms": 420, "http_status": 200},
            }
            value = bad_value(code, template, rng)
            yield SimMessage(c.key.encode(), value, event_time, True, code)
            continue

        n_active = len(active)
        busy = not idle or n_active >= target_active or rand() * target_active < n_active
        if n_active and busy:
            slot = _below(rand, n_active)
            c = customers[active[slot]]
        else:
            slot = _start_session(world, customers, idle, active, now_ms)
            c = customers[active[slot]]
        etype, cid, aid, channel, touchpoint, stage, props = c.queue.popleft()
        if not c.queue:  # session over: back to the idle pool (swap-remove keeps this O(1))
            idle.append(active[slot])
            active[slot] = active[-1]
            active.pop()
        value = dumps(
            {
                "event_id": world.uuid4(),
                "event_type": etype,
                "schema_version": SCHEMA_VERSION,
                "occurred_at": occurred_at,
                "customer_id": cid,
                "anonymous_id": aid,
                "session_id": c.session_id,
                "channel": channel,
                "touchpoint": touchpoint,
                "journey_stage": stage,
                "segment": c.persona.segment,
                "timezone": c.timezone,
                "properties": props,
            }
        )
        yield SimMessage((cid or str(aid)).encode(), value, event_time, False, None)


def _start_session(
    world: _Journeys, customers: list[_Customer], idle: list[int], active: list[int], now_ms: int
) -> int:
    """Move an idle customer into a new session; return its slot in ``active``.

    Customers mostly sleep at night in their own time zone and busy personas start sessions more
    often: a few draws are rejected for either reason before one is taken anyway.
    """
    rand = world.rand
    for _ in range(4):
        slot = _below(rand, len(idle))
        c = customers[idle[slot]]
        local_hour = ((now_ms // 1000 + c.tz_offset_s) // 3600) % 24
        if 1 <= local_hour < 7 and rand() < 0.85:
            continue
        if rand() < c.persona.activity / 1.2:
            break
    index = idle[slot]
    idle[slot] = idle[-1]
    idle.pop()
    world.plan_session(c)
    active.append(index)
    return len(active) - 1


def _below(rand: Callable[[], float], n: int) -> int:
    return int(rand() * n)
