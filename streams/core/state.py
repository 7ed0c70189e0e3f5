"""Per-customer state: everything the engine remembers about one customer, and its wire form.

The Faust table stores ``CustomerState.to_bytes()``: MessagePack (msgspec) of the fields in
order, after the format version (4: the remembered event ids packed,
:mod:`streams.core.seen_ids`, the kept signals, :mod:`streams.core.kept_signals`, and the
product views, :mod:`streams.core.product_views`); the decoders live in
:mod:`streams.core.state_wire`. ``from_bytes`` also reads format 3 (signals and views as
records), format 2 (the ids as a map too) and format 1 (a JSON object with short keys), which
deployed changelogs still hold. MessagePack is about half the size of that JSON and
encodes and decodes in about half the time (no float text to format or parse, tuples built in C).
Every container is bounded by a time retention *and* a hard length cap, so the encoded
size has a fixed upper bound (see docs/scoring.md, "State size", and tests/unit/test_engine.py).
Times are event-time epoch seconds; the only wall-clock quantity kept is ``lag_s``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec
import orjson

from streams.core.kept_signals import KeptSignals
from streams.core.product_views import ProductViews
from streams.core.seen_ids import SeenIds
from streams.core.state_wire import (
    STATE_FIELDS,
    STATE_VERSION,
    CartRec,
    ContactRec,
    DeferredRec,
    ErrorRec,
    PackedSignals,
    PackedViews,
    SignalRec,
    ViewRec,
    decode_legacy,
    decode_wire,
    encode,
)

# Hard caps (the time retentions live in the engine config). They bound the state size.
MAX_SEEN_IDS: Final = 512
MIN_SEEN_IDS: Final = 256
MAX_SIGNALS: Final = 24
MAX_CONTACTS: Final = 16
MAX_ERRORS: Final = 32
MAX_VIEWS: Final = 32
MAX_PENDING_CARTS: Final = 8
MAX_DEFERRED: Final = 4  # >= 2 UTC days x the default marketing cap of 2


_INF: Final = float("inf")
_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes  # big-endian by default (Python >= 3.11)


def event_id_hash(event_id: str) -> int:
    """63-bit digest of an event id: fixed size in the state, collision odds ~1e-19 per pair."""
    return _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest()) >> 1


def short_hash(text: str) -> int:
    """31-bit digest, for comparing product ids within one customer's last hour of views."""
    return _from_bytes(_blake2b(text.encode(), digest_size=4).digest()) >> 1


class CustomerState:
    """What the engine keeps per customer. Mutated in place by ``Engine.process``/``tick``.

    A plain class, compiled with the engine (streams/core/native.py): the engine reads and
    writes its fields on every event, and a compiled class keeps them in C slots, where a
    msgspec Struct would cost a generic attribute look-up each time. Equality compares every
    field (the wire form); the fields are listed in :data:`STATE_FIELDS`.
    """

    __slots__ = STATE_FIELDS

    watermark: float | None  # highest event time processed
    first_seen: float | None  # lowest event time processed
    lag_s: float  # wall time minus event time at the last in-order event (for tick())
    timezone: str | None
    segment: str | None
    seen: SeenIds  # event id hashes with their event times (whole seconds)
    score_sum: float  # decayed signal sum, referenced to the watermark
    signals: KeptSignals  # strongest signals, for explanations
    score: float  # experience score after the last event
    risk: float  # churn risk after the last event
    stage: str | None  # journey stage after the last event
    score_hourly: dict[int, float]  # hour -> max score
    pub_score: float | None  # last published score update
    pub_risk: float | None
    pub_stage: str | None
    activity_daily: dict[int, float]  # day -> activity events
    stage_seen: dict[str, float]  # stage -> last event time
    purchases: int
    first_purchase: float | None
    last_purchase: float | None
    last_purchase_id: str | None
    spend: float
    last_negative: float | None  # last detractor-like survey answer
    contacts: list[ContactRec]
    errors: list[ErrorRec]
    views: ProductViews  # product page views (browse intent)
    last_cart: float | None  # last checkout_started / cart_abandon / purchase
    pending_carts: list[CartRec]
    deferred: list[DeferredRec]
    last_fired: dict[str, float]  # rule -> alert event time
    daily_counts: dict[str, int]  # "kind:day" -> alerts
    last_support_alert: float | None
    # Wall-clock epoch seconds at which the worker next re-evaluates the churn risk of this
    # state if no event comes (streams/core/idle_risk.py; inf: never). A schedule, not a
    # fact: cleared by every event, set by the worker at the checkpoint and after each look.
    risk_wake_s: float | None
    # Distinct UTC days with a purchase and the spend of the first of them (churn model: BG/NBD
    # counts repeat purchase days, Gamma-Gamma the mean spend of the repeat days). States
    # written before these fields decode with 0 (the churn scorer then uses ``purchases``).
    purchase_days: int
    first_day_spend: float

    def __init__(
        self,
        watermark: float | None = None,
        first_seen: float | None = None,
        lag_s: float = 0.0,
        timezone: str | None = None,
        segment: str | None = None,
        seen: SeenIds | dict[int, int] | tuple[bytes, bytes] | None = None,
        score_sum: float = 0.0,
        signals: KeptSignals | list[SignalRec] | PackedSignals | None = None,
        score: float = 50.0,
        risk: float = 0.0,
        stage: str | None = None,
        score_hourly: dict[int, float] | None = None,
        pub_score: float | None = None,
        pub_risk: float | None = None,
        pub_stage: str | None = None,
        activity_daily: dict[int, float] | None = None,
        stage_seen: dict[str, float] | None = None,
        purchases: int = 0,
        first_purchase: float | None = None,
        last_purchase: float | None = None,
        last_purchase_id: str | None = None,
        spend: float = 0.0,
        last_negative: float | None = None,
        contacts: list[ContactRec] | None = None,
        errors: list[ErrorRec] | None = None,
        views: ProductViews | list[ViewRec] | PackedViews | None = None,
        last_cart: float | None = None,
        pending_carts: list[CartRec] | None = None,
        deferred: list[DeferredRec] | None = None,
        last_fired: dict[str, float] | None = None,
        daily_counts: dict[str, int] | None = None,
        last_support_alert: float | None = None,
        risk_wake_s: float | None = None,
        purchase_days: int = 0,
        first_day_spend: float = 0.0,
    ) -> None:
        self.watermark = watermark
        self.first_seen = first_seen
        self.lag_s = lag_s
        self.timezone = timezone
        self.segment = segment
        self.seen = _seen_ids(seen)
        self.score_sum = score_sum
        self.signals = _kept_signals(signals)
        self.score = score
        self.risk = risk
        self.stage = stage
        self.score_hourly = {} if score_hourly is None else score_hourly
        self.pub_score = pub_score
        self.pub_risk = pub_risk
        self.pub_stage = pub_stage
        self.activity_daily = {} if activity_daily is None else activity_daily
        self.stage_seen = {} if stage_seen is None else stage_seen
        self.purchases = purchases
        self.first_purchase = first_purchase
        self.last_purchase = last_purchase
        self.last_purchase_id = last_purchase_id
        self.spend = spend
        self.last_negative = last_negative
        self.contacts = [] if contacts is None else contacts
        self.errors = [] if errors is None else errors
        self.views = _product_views(views)
        self.last_cart = last_cart
        self.pending_carts = [] if pending_carts is None else pending_carts
        self.deferred = [] if deferred is None else deferred
        self.last_fired = {} if last_fired is None else last_fired
        self.daily_counts = {} if daily_counts is None else daily_counts
        self.last_support_alert = last_support_alert
        self.risk_wake_s = risk_wake_s
        self.purchase_days = purchase_days
        self.first_day_spend = first_day_spend

    def next_due(self) -> float | None:
        """Earliest event-time deadline (pending cart or deferred alert), or None."""
        # Runs after every event (the deadline index): no list building.
        carts, deferred = self.pending_carts, self.deferred
        if not carts:
            return deferred[0][0] if deferred else None
        due = carts[0][0]
        if deferred and deferred[0][0] < due:
            return deferred[0][0]
        return due

    def deadline_wakeup_s(self) -> float | None:
        """Wall-clock epoch seconds at which ``Engine.tick`` has a deadline to fire (a pending
        cart or deferred alert: the deadline plus ``lag_s``), or None."""
        due = self.next_due()
        return None if due is None else due + self.lag_s

    def next_wakeup_s(self) -> float | None:
        """Wall-clock epoch seconds at which ``Engine.tick`` has work for this customer, or None.

        ``tick`` compares deadlines with ``now - lag_s`` (the customer's event-time clock as
        estimated from the last event), so a deadline's wake-up is the deadline plus that lag;
        the risk's re-evaluation (``risk_wake_s``) is in wall-clock time already.
        """
        wake = self.deadline_wakeup_s()
        risk_wake = self.risk_wake_s
        if risk_wake is not None and risk_wake < _INF and (wake is None or risk_wake < wake):
            return risk_wake
        return wake

    def wire(self) -> tuple[Any, ...]:
        """The format version, then every field in declaration order (what is stored)."""
        return (STATE_VERSION, self.watermark, self.first_seen, self.lag_s, self.timezone,
                self.segment, self.seen.wire(), self.score_sum, self.signals.wire(), self.score,
                self.risk, self.stage, self.score_hourly, self.pub_score, self.pub_risk,
                self.pub_stage, self.activity_daily, self.stage_seen, self.purchases,
                self.first_purchase, self.last_purchase, self.last_purchase_id, self.spend,
                self.last_negative, self.contacts, self.errors, self.views.wire(), self.last_cart,
                self.pending_carts, self.deferred, self.last_fired, self.daily_counts,
                self.last_support_alert, self.risk_wake_s, self.purchase_days,
                self.first_day_spend)

    def to_bytes(self) -> bytes:
        """MessagePack of :meth:`wire`: an array, the format version first."""
        return _encode(self.wire())

    def as_dict(self) -> dict[str, Any]:
        """Every field by name: the containers are the state's own, not copies, but for
        ``seen`` (its wire form), ``signals`` and ``views`` (lists of records)."""
        fields = dict(zip(STATE_FIELDS, self.wire()[1:], strict=True))
        fields["signals"] = self.signals.records()
        fields["views"] = self.views.records()
        return fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CustomerState) and self.wire() == other.wire()

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"CustomerState({inner})"

    @classmethod
    def from_bytes(cls, data: bytes) -> CustomerState:
        """Decode :meth:`to_bytes` output, or a state written as JSON by format version 1.

        Raises ValueError on anything else (an unknown format version included).
        """
        if data[:1] == b"{":  # version 1: a JSON object (still in deployed changelogs)
            try:
                return _from_v1(data)
            except (KeyError, TypeError) as exc:  # a field missing or of the wrong type
                raise ValueError(f"unsupported customer state (format 1): {exc!r}") from None
        try:
            wire = decode_wire(data)
        except msgspec.DecodeError:
            try:  # written before the last fields were added
                wire = decode_legacy(data)
            except msgspec.DecodeError as exc:
                raise ValueError(f"unsupported customer state: {exc}") from None
        return _from_wire(wire)

    def copy(self) -> CustomerState:
        """An independent deep copy (through the wire form)."""
        return CustomerState.from_bytes(self.to_bytes())

_encode: Final = encode


def _seen_ids(seen: SeenIds | dict[int, int] | tuple[bytes, bytes] | None) -> SeenIds:
    """The remembered ids as given: packed (format 3 and in memory), a dict (formats 1, 2)."""
    if seen is None:
        return SeenIds()
    if isinstance(seen, SeenIds):
        return seen
    if isinstance(seen, dict):
        return SeenIds.from_pairs(seen)
    return SeenIds.from_wire(seen[0], seen[1])


def _kept_signals(signals: KeptSignals | list[SignalRec] | PackedSignals | None) -> KeptSignals:
    """The kept signals as given: packed (format 4 and in memory), records (formats 1-3)."""
    if signals is None:
        return KeptSignals()
    if isinstance(signals, KeptSignals):
        return signals
    if isinstance(signals, list):
        return KeptSignals.from_records(signals)
    return KeptSignals.from_wire(signals[0], signals[1], signals[2], signals[3])


def _product_views(views: ProductViews | list[ViewRec] | PackedViews | None) -> ProductViews:
    """The product views as given: packed (format 4 and in memory), records (formats 1-3)."""
    if views is None:
        return ProductViews()
    if isinstance(views, ProductViews):
        return views
    if isinstance(views, list):
        return ProductViews.from_records(views)
    return ProductViews.from_wire(views[0], views[1], views[2])


def _from_wire(t: tuple[Any, ...]) -> CustomerState:
    """A state from a decoded :data:`WIRE_TYPE` tuple (``t[0]`` is the version)."""
    # Explicit indexing: 0.18 us, where CustomerState(*t[1:]) costs 0.44 us (compiled).
    return CustomerState(
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
        t[7],
        t[8],
        t[9],
        t[10],
        t[11],
        t[12],
        t[13],
        t[14],
        t[15],
        t[16],
        t[17],
        t[18],
        t[19],
        t[20],
        t[21],
        t[22],
        t[23],
        t[24],
        t[25],
        t[26],
        t[27],
        t[28],
        t[29],
        t[30],
        t[31],
        t[32],
        t[33],
        t[34],
        t[35],
    )


def _from_v1(data: bytes) -> CustomerState:
    """A state of format version 1: compact orjson with short keys (written until engine v2)."""
    d = orjson.loads(data)
    if d.get("v") != 1:
        raise ValueError(f"unsupported customer state version {d.get('v')!r}")
    # Hashes and hour/day keys are JSON integers, so they decode as int already.
    ct, er, vw, pc, df = d["ct"], d["er"], d["vw"], d["pc"], d["df"]
    return CustomerState(
        watermark=d["w"],
        first_seen=d["fs"],
        lag_s=d["lag"],
        timezone=d["tz"],
        segment=d["seg"],
        seen=dict(d["ids"]),
        score_sum=d["s"],
        signals=list(map(tuple, d["sig"])),
        score=d["sc"],
        risk=d["rk"],
        stage=d["st"],
        score_hourly=dict(d["sh"]),
        pub_score=d["ps"],
        pub_risk=d["pr"],
        pub_stage=d["pst"],
        activity_daily=dict(d["ad"]),
        stage_seen=d["ss"],
        purchases=d["np"],
        first_purchase=d["fp"],
        last_purchase=d["lp"],
        last_purchase_id=d["lpi"],
        spend=d["sp"],
        last_negative=d["neg"],
        contacts=list(map(tuple, ct)) if ct else ct,
        errors=list(map(tuple, er)) if er else er,
        views=list(map(tuple, vw)) if vw else vw,
        last_cart=d["lc"],
        pending_carts=list(map(tuple, pc)) if pc else pc,
        deferred=list(map(tuple, df)) if df else df,
        last_fired=d["lf"],
        daily_counts=d["dc"],
        last_support_alert=d["lsa"],
    )
