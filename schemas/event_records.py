"""Touchpoint events as the hot path decodes them: msgspec Structs mirroring :mod:`schemas.events`.

The pydantic models in :mod:`schemas.events` are the contract (and its JSON Schemas). Decoding
with them costs 6-9 us per message; :func:`decode_event` reads the same bytes into these Structs
in about a fifth of that. It accepts a message only in the contract's plainest form (exact JSON
types, ``Z``/offset timestamps): anything else (a lax-mode conversion such as ``"200"`` for
an integer, or a message that is not valid at all) raises ``msgspec.DecodeError`` and is left to
the pydantic model, which decides and names the error (``streams.core.validation``). So whatever
this module accepts, the contract accepts with the same values; tests/unit/
test_event_records.py checks that on generated and mutated events.

The Structs keep the attribute names of the pydantic models (``event.properties.score``,
``event.stage``, ``event.identity``), so code written against either reads both.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from schemas.events import (
    FLOAT32_MAX,
    INT32_MAX,
    INT64_MAX,
    MAX_COMMENT_CHARS,
    SURVEY_SCALES,
    Channel,
    EventBase,
    JourneyStage,
    derive_stage,
)

_MAX_FLOAT = sys.float_info.max  # JSON numbers beyond it decode as inf, which the contract rejects


def _text(min_length: int, max_length: int) -> Any:
    return Annotated[str, msgspec.Meta(min_length=min_length, max_length=max_length)]


NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# \Z, not $: Python's $ also matches before a final newline, pydantic's (Rust) regex does not.
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}\Z")]
Money = Annotated[float, msgspec.Meta(ge=0, le=_MAX_FLOAT)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class _Props(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Every optional property defaults to None, so ``msgspec.to_builtins`` of a properties
    Struct leaves out the absent ones, like pydantic's ``model_dump(exclude_none=True)``."""


class PageViewProps(_Props, frozen=True):
    url: _text(1, 4096)  # type: ignore[valid-type]
    load_time_ms: Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)] | None = None
    http_status: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    product_id: NonEmpty | None = None


class CheckoutStartedProps(_Props, frozen=True):
    cart_id: NonEmpty
    cart_value: Money | None = None
    currency: Currency | None = None


class CartAbandonProps(_Props, frozen=True):
    cart_id: NonEmpty
    cart_value: Money
    currency: Currency
    items: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None = None


class PurchaseProps(_Props, frozen=True):
    order_id: NonEmpty
    order_value: Money
    currency: Currency
    cart_id: NonEmpty | None = None


class PaymentFailedProps(_Props, frozen=True):
    cart_id: NonEmpty | None = None
    order_value: Money | None = None
    currency: Currency | None = None
    reason: _text(0, 256) | None = None  # type: ignore[valid-type]


class AppErrorProps(_Props, frozen=True):
    error_code: _text(1, 128)  # type: ignore[valid-type]
    message: _text(0, 1024) | None = None  # type: ignore[valid-type]
    screen: _text(0, 256) | None = None  # type: ignore[valid-type]


class SupportContactProps(_Props, frozen=True):
    contact_id: NonEmpty
    reason: _text(1, 256)  # type: ignore[valid-type]
    resolved: bool
    wait_s: Annotated[float, msgspec.Meta(ge=0, le=FLOAT32_MAX)] | None = None


class SurveyAnswerProps(_Props, frozen=True):
    survey: Literal["nps", "csat", "ces"]
    score: int  # on the survey's scale: checked by decode_event (a cross-field rule)
    comment: _text(0, MAX_COMMENT_CHARS) | None = None  # type: ignore[valid-type]


class IdentifyProps(_Props, frozen=True):
    email_hash: _text(0, 128) | None = None  # type: ignore[valid-type]
    method: _text(0, 64) | None = None  # type: ignore[valid-type]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event_type", gc=False):
    """Envelope fields shared by every event type (``schemas.events.EventBase``)."""

    event_type: ClassVar[str]
    event_id: NonEmpty
    schema_version: int
    occurred_at: AwareDatetime
    customer_id: NonEmpty | None = None
    anonymous_id: NonEmpty | None = None
    session_id: NonEmpty | None = None
    channel: Channel
    touchpoint: _text(1, 128) | None = None  # type: ignore[valid-type]
    journey_stage: JourneyStage | None = None
    segment: _text(1, 64) | None = None  # type: ignore[valid-type]
    timezone: _text(1, 64) | None = None  # type: ignore[valid-type]

    @property
    def identity(self) -> str:
        """The partition key: customer_id, or anonymous_id before the customer is known."""
        return self.customer_id or self.anonymous_id or ""

    @property
    def stage(self) -> JourneyStage:
        """The journey stage sent by the producer, else derived from the event (see docs)."""
        return self.journey_stage or derive_stage(self)  # type: ignore[arg-type]


class PageViewEvent(Event, frozen=True, tag="page_view"):
    event_type: ClassVar[str] = "page_view"
    properties: PageViewProps


class CheckoutStartedEvent(Event, frozen=True, tag="checkout_started"):
    event_type: ClassVar[str] = "checkout_started"
    properties: CheckoutStartedProps


class CartAbandonEvent(Event, frozen=True, tag="cart_abandon"):
    event_type: ClassVar[str] = "cart_abandon"
    properties: CartAbandonProps


class PurchaseEvent(Event, frozen=True, tag="purchase"):
    event_type: ClassVar[str] = "purchase"
    properties: PurchaseProps


class PaymentFailedEvent(Event, frozen=True, tag="payment_failed"):
    event_type: ClassVar[str] = "payment_failed"
    properties: PaymentFailedProps


class AppErrorEvent(Event, frozen=True, tag="app_error"):
    event_type: ClassVar[str] = "app_error"
    properties: AppErrorProps


class SupportContactEvent(Event, frozen=True, tag="support_contact"):
    event_type: ClassVar[str] = "support_contact"
    properties: SupportContactProps


class SurveyAnswerEvent(Event, frozen=True, tag="survey_answer"):
    event_type: ClassVar[str] = "survey_answer"
    properties: SurveyAnswerProps


class IdentifyEvent(Event, frozen=True, tag="identify"):
    event_type: ClassVar[str] = "identify"
    properties: IdentifyProps = msgspec.field(default_factory=IdentifyProps)


AnyEvent = (
    PageViewEvent
    | CheckoutStartedEvent
    | CartAbandonEvent
    | PurchaseEvent
    | PaymentFailedEvent
    | AppErrorEvent
    | SupportContactEvent
    | SurveyAnswerEvent
    | IdentifyEvent
)
EVENT_RECORDS: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        PageViewEvent,
        CheckoutStartedEvent,
        CartAbandonEvent,
        PurchaseEvent,
        PaymentFailedEvent,
        AppErrorEvent,
        SupportContactEvent,
        SurveyAnswerEvent,
        IdentifyEvent,
    )
}

_decode = msgspec.json.Decoder(AnyEvent).decode
# jiter (pydantic) refuses JSON nested deeper than about 200 levels; a message with fewer
# openers than this cannot be nested that deep.
_MAX_OPENERS = 150
_OCCURRED_AT = b'"occurred_at"'


def decode_event(value: bytes) -> Event:
    """The event in ``value`` if it is in the contract's plainest form.

    Raises ``msgspec.DecodeError`` otherwise; the caller then asks the pydantic model, which
    either accepts it (a lax-mode form) or says what is wrong. The envelope rules that the models
    do not express either (schema version, identity, time range) are the caller's.
    """
    # Where msgspec is more lenient than pydantic, hand over to the contract: msgspec skips
    # unknown fields without checking their UTF-8 or depth, and rounds a fraction of a second
    # beyond microseconds where pydantic truncates it.
    if len(value) > _MAX_OPENERS and value.count(b"{") + value.count(b"[") > _MAX_OPENERS:
        raise msgspec.DecodeError("deeply nested")
    if not value.isascii():
        try:
            value.decode()
        except UnicodeDecodeError:
            raise msgspec.DecodeError("not UTF-8") from None
    at = value.find(_OCCURRED_AT)
    if at < 0 or value.find(_OCCURRED_AT, at + 13) >= 0:
        raise msgspec.DecodeError("occurred_at not written once and plainly")
    start = value.find(b'"', at + 13)  # the value's opening quote
    dot = value.find(b".", start, value.find(b'"', start + 1))
    if dot >= 0 and value[dot + 1 : dot + 8].isdigit():
        raise msgspec.DecodeError("occurred_at finer than microseconds (or another number)")
    try:
        event: Event = _decode(value)
    except RecursionError:
        raise msgspec.DecodeError("nested too deeply") from None
    if type(event) is SurveyAnswerEvent:
        p = event.properties
        low, high = SURVEY_SCALES[p.survey]
        if not low <= p.score <= high:
            raise msgspec.ValidationError("score off its scale")
    return event


def from_model(model: EventBase) -> Event:
    """The record of an event that the pydantic contract validated (same values)."""
    cls = EVENT_RECORDS[model.event_type]  # type: ignore[attr-defined]
    fields = dict(model)
    fields.pop("event_type")
    fields["properties"] = _PROPS[cls](**dict(model.properties))  # type: ignore[attr-defined]
    return cls(**fields)


_PROPS: dict[type[Event], type[_Props]] = {
    PageViewEvent: PageViewProps,
    CheckoutStartedEvent: CheckoutStartedProps,
    CartAbandonEvent: CartAbandonProps,
    PurchaseEvent: PurchaseProps,
    PaymentFailedEvent: PaymentFailedProps,
    AppErrorEvent: AppErrorProps,
    SupportContactEvent: SupportContactProps,
    SurveyAnswerEvent: SurveyAnswerProps,
    IdentifyEvent: IdentifyProps,
}
