"""The touchpoint event contract (wire format v1): pydantic v2 models, one per event type.

Every Kafka message on ``cx.touchpoints`` is one UTF-8 JSON object with the envelope fields below
and a ``properties`` object whose shape depends on ``event_type``. Unknown extra fields are
accepted and ignored (forward compatibility); see docs/events.md for the evolution policy.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
MAX_COMMENT_CHARS = 5000

NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]

# Numeric bounds = what the ClickHouse column of each field holds (sinks/sql), so that a valid
# event always inserts (docs/events.md, "Numeric bounds").
INT32_MAX = 2**31 - 1
"""``load_time_ms`` is stored in an Int32 column."""
INT64_MAX = 2**63 - 1
"""Integers without a column of their own (``items``) are kept inside the ``properties`` JSON,
which orjson writes and ClickHouse's JSONExtractInt reads up to Int64."""
FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite Float32: ``wait_s`` is stored in a Float32 column."""


class Channel(str, Enum):
    web = "web"
    app = "app"
    store = "store"
    call_center = "call_center"
    chat = "chat"
    email = "email"
    social = "social"


class JourneyStage(str, Enum):
    awareness = "awareness"
    consideration = "consideration"
    purchase = "purchase"
    usage = "usage"
    loyalty = "loyalty"


STAGE_ORDER: tuple[JourneyStage, ...] = tuple(JourneyStage)


class _Props(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PageViewProps(_Props):
    url: Annotated[str, Field(min_length=1, max_length=4096)]
    load_time_ms: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    http_status: Annotated[int, Field(ge=100, le=599)] | None = None
    product_id: NonEmpty | None = None


class CheckoutStartedProps(_Props):
    cart_id: NonEmpty
    cart_value: Money | None = None
    currency: Currency | None = None


class CartAbandonProps(_Props):
    cart_id: NonEmpty
    cart_value: Money
    currency: Currency
    items: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None


class PurchaseProps(_Props):
    order_id: NonEmpty
    order_value: Money
    currency: Currency
    cart_id: NonEmpty | None = None


class PaymentFailedProps(_Props):
    cart_id: NonEmpty | None = None
    order_value: Money | None = None
    currency: Currency | None = None
    reason: Annotated[str, Field(max_length=256)] | None = None


class AppErrorProps(_Props):
    error_code: Annotated[str, Field(min_length=1, max_length=128)]
    message: Annotated[str, Field(max_length=1024)] | None = None
    screen: Annotated[str, Field(max_length=256)] | None = None


class SupportContactProps(_Props):
    contact_id: NonEmpty
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    resolved: bool
    wait_s: Annotated[float, Field(ge=0, le=FLOAT32_MAX, allow_inf_nan=False)] | None = None


SURVEY_SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}


class SurveyAnswerProps(_Props):
    survey: Literal["nps", "csat", "ces"]
    score: StrictInt
    comment: Annotated[str, Field(max_length=MAX_COMMENT_CHARS)] | None = None

    @field_validator("score")
    @classmethod
    def _score_on_scale(cls, score: int, info: ValidationInfo) -> int:
        survey = info.data.get("survey")
        if survey is None:  # survey itself failed: that error names the problem
            return score
        low, high = SURVEY_SCALES[survey]
        if not low <= score <= high:
            raise ValueError(f"score {score} is outside the {survey} scale {low}-{high}")
        return score


class IdentifyProps(_Props):
    email_hash: Annotated[str, Field(max_length=128)] | None = None
    method: Annotated[str, Field(max_length=64)] | None = None


class EventBase(BaseModel):
    """Envelope fields shared by every event type."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: NonEmpty
    schema_version: StrictInt
    occurred_at: AwareDatetime
    customer_id: NonEmpty | None = None
    anonymous_id: NonEmpty | None = None
    session_id: NonEmpty | None = None
    channel: Channel
    touchpoint: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    journey_stage: JourneyStage | None = None
    segment: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: object) -> object:
        # The contract says RFC 3339 text with a zone: a bare Unix number is not taken for a time.
        if isinstance(value, int | float):
            raise ValueError("must be an RFC 3339 timestamp string with a zone, not a number")
        return value

    @property
    def identity(self) -> str:
        """The partition key: customer_id, or anonymous_id before the customer is known."""
        return self.customer_id or self.anonymous_id or ""

    @property
    def stage(self) -> JourneyStage:
        """The journey stage sent by the producer, else derived from the event (see docs)."""
        return self.journey_stage or derive_stage(self)


class PageViewEvent(EventBase):
    event_type: Literal["page_view"]
    properties: PageViewProps


class CheckoutStartedEvent(EventBase):
    event_type: Literal["checkout_started"]
    properties: CheckoutStartedProps


class CartAbandonEvent(EventBase):
    event_type: Literal["cart_abandon"]
    properties: CartAbandonProps


class PurchaseEvent(EventBase):
    event_type: Literal["purchase"]
    properties: PurchaseProps


class PaymentFailedEvent(EventBase):
    event_type: Literal["payment_failed"]
    properties: PaymentFailedProps


class AppErrorEvent(EventBase):
    event_type: Literal["app_error"]
    properties: AppErrorProps


class SupportContactEvent(EventBase):
    event_type: Literal["support_contact"]
    properties: SupportContactProps


class SurveyAnswerEvent(EventBase):
    event_type: Literal["survey_answer"]
    properties: SurveyAnswerProps


class IdentifyEvent(EventBase):
    event_type: Literal["identify"]
    properties: IdentifyProps = IdentifyProps()


TouchpointEvent = Annotated[
    PageViewEvent
    | CheckoutStartedEvent
    | CartAbandonEvent
    | PurchaseEvent
    | PaymentFailedEvent
    | AppErrorEvent
    | SupportContactEvent
    | SurveyAnswerEvent
    | IdentifyEvent,
    Field(discriminator="event_type"),
]

EVENT_MODELS: dict[str, type[EventBase]] = {
    "page_view": PageViewEvent,
    "checkout_started": CheckoutStartedEvent,
    "cart_abandon": CartAbandonEvent,
    "purchase": PurchaseEvent,
    "payment_failed": PaymentFailedEvent,
    "app_error": AppErrorEvent,
    "support_contact": SupportContactEvent,
    "survey_answer": SurveyAnswerEvent,
    "identify": IdentifyEvent,
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)

touchpoint_adapter: TypeAdapter[Any] = TypeAdapter(TouchpointEvent)

_STAGE_BY_TYPE: dict[str, JourneyStage] = {
    "identify": JourneyStage.awareness,
    "checkout_started": JourneyStage.purchase,
    "cart_abandon": JourneyStage.purchase,
    "payment_failed": JourneyStage.purchase,
    "purchase": JourneyStage.purchase,
    "app_error": JourneyStage.usage,
    "support_contact": JourneyStage.usage,
    "survey_answer": JourneyStage.loyalty,
}


def derive_stage(event: EventBase) -> JourneyStage:
    """Journey stage of an event that did not state one.

    page_view: consideration when it names a product, else awareness; checkout_started,
    cart_abandon, payment_failed, purchase: purchase; app_error, support_contact: usage;
    survey_answer: loyalty; identify: awareness.
    """
    event_type: str = getattr(event, "event_type", "")
    if event_type == "page_view":
        props = getattr(event, "properties", None)
        has_product = getattr(props, "product_id", None) is not None
        return JourneyStage.consideration if has_product else JourneyStage.awareness
    return _STAGE_BY_TYPE.get(event_type, JourneyStage.awareness)
