"""Per-customer state: everything the engine remembers about one customer, and its wire form.

The Faust table stores ``CustomerState.to_bytes()`` (compact orjson with short keys and a format
version). Every container is bounded by a time retention *and* a hard length cap, so the encoded
size has a fixed upper bound (see docs/scoring.md, "State size", and tests/unit/test_engine.py).
Times are event-time epoch seconds; the only wall-clock quantity kept is ``lag_s``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

STATE_VERSION = 1

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


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes  # big-endian by default (Python >= 3.11)


def event_id_hash(event_id: str) -> int:
    """63-bit digest of an event id: fixed size in the state, collision odds ~1e-19 per pair."""
    return _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest()) >> 1


def short_hash(text: str) -> int:
    """31-bit digest, for comparing product ids within one customer's last hour of views."""
    return _from_bytes(_blake2b(text.encode(), digest_size=4).digest()) >> 1


@dataclass(slots=True)
class CustomerState:
    """What the engine keeps per customer. Mutated in place by ``Engine.process``/``tick``."""

    watermark: float | None = None  # highest event time processed
    first_seen: float | None = None  # lowest event time processed
    lag_s: float = 0.0  # wall time minus event time at the last in-order event (for tick())
    timezone: str | None = None
    segment: str | None = None
    seen: dict[int, float] = field(default_factory=dict)  # event id hash -> event time
    score_sum: float = 0.0  # decayed signal sum, referenced to the watermark
    signals: list[SignalRec] = field(default_factory=list)  # strongest signals, for explanations
    score: float = 50.0  # experience score after the last event
    risk: float = 0.0  # churn risk after the last event
    stage: str | None = None  # journey stage after the last event
    score_hourly: dict[int, float] = field(default_factory=dict)  # hour -> max score
    pub_score: float | None = None  # last published score update
    pub_risk: float | None = None
    pub_stage: str | None = None
    activity_daily: dict[int, float] = field(default_factory=dict)  # day -> activity events
    stage_seen: dict[str, float] = field(default_factory=dict)  # stage -> last event time
    purchases: int = 0
    first_purchase: float | None = None
    last_purchase: float | None = None
    last_purchase_id: str | None = None
    spend: float = 0.0
    last_negative: float | None = None  # last detractor-like survey answer
    contacts: list[ContactRec] = field(default_factory=list)
    errors: list[ErrorRec] = field(default_factory=list)
    views: list[ViewRec] = field(default_factory=list)
    last_cart: float | None = None  # last checkout_started / cart_abandon / purchase
    pending_carts: list[CartRec] = field(default_factory=list)
    deferred: list[DeferredRec] = field(default_factory=list)
    last_fired: dict[str, float] = field(default_factory=dict)  # rule -> alert event time
    daily_counts: dict[str, int] = field(default_factory=dict)  # "kind:day" -> alerts
    last_support_alert: float | None = None

    def next_due(self) -> float | None:
        """Earliest event-time deadline (pending cart or deferred alert), or None."""
        dues = [c[0] for c in self.pending_carts[:1]] + [d[0] for d in self.deferred[:1]]
        return min(dues) if dues else None

    def next_wakeup_s(self) -> float | None:
        """Wall-clock epoch seconds at which ``Engine.tick`` has work for this customer, or None.

        ``tick`` compares deadlines with ``now - lag_s`` (the customer's event-time clock as
        estimated from the last event), so the wake-up is the deadline plus that lag.
        """
        due = self.next_due()
        return None if due is None else due + self.lag_s

    def to_bytes(self) -> bytes:
        """Compact orjson encoding (format version ``STATE_VERSION``)."""
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "w": self.watermark,
                "fs": self.first_seen,
                "lag": self.lag_s,
                "tz": self.timezone,
                "seg": self.segment,
                "ids": list(self.seen.items()),
                "s": self.score_sum,
                "sig": self.signals,
                "sc": self.score,
                "rk": self.risk,
                "st": self.stage,
                "sh": list(self.score_hourly.items()),
                "ps": self.pub_score,
                "pr": self.pub_risk,
                "pst": self.pub_stage,
                "ad": list(self.activity_daily.items()),
                "ss": self.stage_seen,
                "np": self.purchases,
                "fp": self.first_purchase,
                "lp": self.last_purchase,
                "lpi": self.last_purchase_id,
                "sp": self.spend,
                "neg": self.last_negative,
                "ct": self.contacts,
                "er": self.errors,
                "vw": self.views,
                "lc": self.last_cart,
                "pc": self.pending_carts,
                "df": self.deferred,
                "lf": self.last_fired,
                "dc": self.daily_counts,
                "lsa": self.last_support_alert,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CustomerState:
        """Decode :meth:`to_bytes` output. Raises ValueError on an unknown format version."""
        d = orjson.loads(data)
        if d.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported customer state version {d.get('v')!r}")
        # This runs for every event the worker processes: the nested JSON arrays are turned into
        # the in-memory tuples and dicts by C-level dict()/map(tuple) rather than comprehensions
        # (hashes and hour/day keys are JSON integers, so they decode as int already), and the
        # (usually empty) record lists only when they hold something.
        ct, er, vw, pc, df = d["ct"], d["er"], d["vw"], d["pc"], d["df"]
        return cls(
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

    def copy(self) -> CustomerState:
        """An independent deep copy (through the wire form)."""
        return CustomerState.from_bytes(self.to_bytes())
