"""The wire form of a customer state (format version 4): MessagePack decoders, kept as Python.

A stored state is a MessagePack array: the format version, then the fields of
:class:`streams.core.state.CustomerState` in declaration order. msgspec decodes it straight into
a typed tuple (:data:`WIRE_TYPE`: every record a tuple, every float a float); an array written
before the last fields were added (it is shorter) decodes through :class:`LegacyState`, which
fills them with their defaults. Format 3 differs from format 2 in one field only: the remembered
event ids are two packed arrays (:mod:`streams.core.seen_ids`) instead of a map from hash to
event time. Format 4 differs from format 3 in two fields: the kept signals
(:mod:`streams.core.kept_signals`) and the product views (:mod:`streams.core.product_views`) are
packed arrays and lists of strings instead of lists of records.
All three decode here (:func:`decode_wire` tries format 4, then 3); only format 4 is written.

This module is not compiled (streams/core/native.py): msgspec reads these type objects at run
time. Failure behaviour: both decoders raise ``msgspec.DecodeError`` on anything else.
"""
from __future__ import annotations

from typing import Any, Literal, get_type_hints

import msgspec

STATE_VERSION = 4

# (event time, weight in score points, signal name, event id): formats 1-3 (format 4 packs them)
SignalRec = tuple[float, float, str, str]
# (times, weights, names, event ids): format 4 (streams.core.kept_signals)
PackedSignals = tuple[bytes, bytes, list[str], list[str]]
# (event time, resolved, event id, contact id, reason)
ContactRec = tuple[float, bool, str, str, str]
# (event time, event id, error kind)
ErrorRec = tuple[float, str, str]
# (event time, event id, product id hash): formats 1-3 (format 4 packs them)
ViewRec = tuple[float, str, int]
# (times, product id hashes, event ids): format 4 (streams.core.product_views)
PackedViews = tuple[bytes, bytes, list[str]]
# (due time, abandon time, event id, cart id, cart value, currency)
CartRec = tuple[float, float, str, str, float, str]
# (release time, alert as JSON-ready dict without emitted_at)
DeferredRec = tuple[float, dict[str, Any]]

class LegacyState(msgspec.Struct, array_like=True, tag=2, gc=False):
    """Format 2 as a msgspec Struct: the fields of CustomerState, in order, with their types and
    defaults. Reads arrays written before the last fields existed; :data:`WIRE_TYPE` and
    :data:`STATE_FIELDS` are derived from it."""

    watermark: float | None = None
    first_seen: float | None = None
    lag_s: float = 0.0
    timezone: str | None = None
    segment: str | None = None
    seen: dict[int, int] | tuple[bytes, bytes] = {}  # format 2: a map; 3: packed
    score_sum: float = 0.0
    signals: list[SignalRec] = []
    score: float = 50.0
    risk: float = 0.0
    stage: str | None = None
    score_hourly: dict[int, float] = {}
    pub_score: float | None = None
    pub_risk: float | None = None
    pub_stage: str | None = None
    activity_daily: dict[int, float] = {}
    stage_seen: dict[str, float] = {}
    purchases: int = 0
    first_purchase: float | None = None
    last_purchase: float | None = None
    last_purchase_id: str | None = None
    spend: float = 0.0
    last_negative: float | None = None
    contacts: list[ContactRec] = []
    errors: list[ErrorRec] = []
    views: list[ViewRec] = []
    last_cart: float | None = None
    pending_carts: list[CartRec] = []
    deferred: list[DeferredRec] = []
    last_fired: dict[str, float] = {}
    daily_counts: dict[str, int] = {}
    last_support_alert: float | None = None
    risk_wake_s: float | None = None
    purchase_days: int = 0
    first_day_spend: float = 0.0


# Every field of CustomerState, in the order of the wire form.
STATE_FIELDS: tuple[str, ...] = LegacyState.__struct_fields__
_HINTS: dict[str, Any] = get_type_hints(LegacyState)
_PACKED_4: dict[str, Any] = {"signals": PackedSignals, "views": PackedViews}
_HINTS_4 = [_PACKED_4.get(field, hint) for field, hint in _HINTS.items()]
# The version, then every field: what msgspec decodes a format-2 or -3 state into (records as
# tuples), and a format-4 one (the same but for the packed signals and views).
WIRE_TYPE_3: Any = tuple[(Literal[2, 3], *_HINTS.values())]  # type: ignore[misc]
WIRE_TYPE: Any = tuple[(Literal[4], *_HINTS_4)]  # type: ignore[valid-type]

encode = msgspec.msgpack.Encoder().encode
_decode_4 = msgspec.msgpack.Decoder(WIRE_TYPE).decode
_decode_3 = msgspec.msgpack.Decoder(WIRE_TYPE_3).decode
_decode_legacy = msgspec.msgpack.Decoder(LegacyState).decode
_astuple = msgspec.structs.astuple


def decode_wire(data: bytes) -> tuple[Any, ...]:
    """A format-4 state as :data:`WIRE_TYPE`, or a full-length format-2 or -3 one as
    :data:`WIRE_TYPE_3` (its signals and views as records)."""
    try:
        return _decode_4(data)
    except msgspec.DecodeError:
        return _decode_3(data)


def decode_legacy(data: bytes) -> tuple[Any, ...]:
    """A format-2 array of any length the format had, as :data:`WIRE_TYPE` (defaults filled)."""
    return (2, *_astuple(_decode_legacy(data)))
