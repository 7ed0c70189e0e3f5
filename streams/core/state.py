"""Per-customer state: everything the engine remembers about one customer, and its wire form.

The Faust table stores ``CustomerState.to_bytes()``: MessagePack (msgspec) of the fields in
order, after the format version (2). ``from_bytes`` also reads format 1 (a JSON object with short
keys), which deployed changelogs still hold. MessagePack is about half the size of that JSON and
encodes and decodes in about half the time (no float text to format or parse, tuples built in C).
Every container is bounded by a time retention *and* a hard length cap, so the encoded
size has a fixed upper bound (see docs/scoring.md, "State size", and tests/unit/test_engine.py).
Times are event-time epoch seconds; the only wall-clock quantity kept is ``lag_s``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import orjson

STATE_VERSION = 2

# (event time, weight in score points, signal name, event id)
SignalRec = tuple[float, float, str, str]
# (event time, resolved, event id, contact id, reason)
ContactRec = tuple[float, bool, str, str, str]
# (event time, event id, error kind)
ErrorRec = tuple[float, str, str]
# (event time, event id, product id hash)
ViewRec = tuple[float, str, int]
# (due time, abandon time, event id, cart id, cart value, currency)
CartRec = tuple[float, float, str, str, float, str]
# (release time, alert as JSON-ready dict without emitted_at)
DeferredRec = tuple[float, dict[str, Any]]

# Hard caps (the time retentions live in the engine config). They bound the state size.
MAX_SEEN_IDS = 512
MIN_SEEN_IDS = 256
MAX_SIGNALS = 24
MAX_CONTACTS = 16
MAX_ERRORS = 32
MAX_VIEWS = 32
MAX_PENDING_CARTS = 8
MAX_DEFERRED = 4  # >= 2 UTC days x the default marketing cap of 2


_INF = float("inf")
_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes  # big-endian by default (Python >= 3.11)


def event_id_hash(event_id: str) -> int:
    """63-bit digest of an event id: fixed size in the state, collision odds ~1e-19 per pair."""
    return _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest()) >> 1


def short_hash(text: str) -> int:
    """31-bit digest, for comparing product ids within one customer's last hour of views."""
    return _from_bytes(_blake2b(text.encode(), digest_size=4).digest()) >> 1


class CustomerState(msgspec.Struct, array_like=True, tag=STATE_VERSION, gc=False):
    """What the engine keeps per customer. Mutated in place by ``Engine.process``/``tick``.

    Not tracked by the garbage collector (``gc=False``): a state holds only plain containers,
    never a reference back to itself.
    """

    watermark: float | None = None  # highest event time processed
    first_seen: float | None = None  # lowest event time processed
    lag_s: float = 0.0  # wall time minus event time at the last in-order event (for tick())
    timezone: str | None = None
    segment: str | None = None
    seen: dict[int, int] = {}  # event id hash -> event time (whole seconds)
    score_sum: float = 0.0  # decayed signal sum, referenced to the watermark
    signals: list[SignalRec] = []  # strongest signals, for explanations
    score: float = 50.0  # experience score after the last event
    risk: float = 0.0  # churn risk after the last event
    stage: str | None = None  # journey stage after the last event
    score_hourly: dict[int, float] = {}  # hour -> max score
    pub_score: float | None = None  # last published score update
    pub_risk: float | None = None
    pub_stage: str | None = None
    activity_daily: dict[int, float] = {}  # day -> activity events
    stage_seen: dict[str, float] = {}  # stage -> last event time
    purchases: int = 0
    first_purchase: float | None = None
    last_purchase: float | None = None
    last_purchase_id: str | None = None
    spend: float = 0.0
    last_negative: float | None = None  # last detractor-like survey answer
    contacts: list[ContactRec] = []
    errors: list[ErrorRec] = []
    views: list[ViewRec] = []
    last_cart: float | None = None  # last checkout_started / cart_abandon / purchase
    pending_carts: list[CartRec] = []
    deferred: list[DeferredRec] = []
    last_fired: dict[str, float] = {}  # rule -> alert event time
    daily_counts: dict[str, int] = {}  # "kind:day" -> alerts
    last_support_alert: float | None = None
    # Wall-clock epoch seconds at which the worker next re-evaluates the churn risk of this
    # state if no event comes (streams/core/idle_risk.py; inf: never). A schedule, not a
    # fact: cleared by every event, set by the worker at the checkpoint and after each look.
    risk_wake_s: float | None = None
    # Distinct UTC days with a purchase and the spend of the first of them (churn model: BG/NBD
    # counts repeat purchase days, Gamma-Gamma the mean spend of the repeat days). States
    # written before these fields decode with 0 (the churn scorer then uses ``purchases``).
    purchase_days: int = 0
    first_day_spend: float = 0.0

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

    def to_bytes(self) -> bytes:
        """MessagePack of the fields in declaration order, after the format version."""
        return _encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> CustomerState:
        """Decode :meth:`to_bytes` output, or a state written as JSON by format version 1.

        Raises ValueError on anything else (an unknown format version included).
        """
        if data[:1] == b"{":  # version 1: a JSON object (still in deployed changelogs)
            return _from_v1(data)
        try:
            return _decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"unsupported customer state: {exc}") from None

    def copy(self) -> CustomerState:
        """An independent deep copy (through the wire form)."""
        return CustomerState.from_bytes(self.to_bytes())


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CustomerState).decode


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
