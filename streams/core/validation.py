"""Validation of raw touchpoint messages: one parse for a valid event, a precise code otherwise.

:func:`validate_event` turns the bytes of one Kafka message into a typed event or an
:class:`Invalid` carrying an :class:`ErrorCode` and a human-readable message that names the
offending field (``properties.score: ...``). It never raises on any input, so the ingest agent can
route every bad message to the dead-letter topic instead of crashing (Faust acks a message whose
agent raised, which would lose it).

Pure: no Faust or Kafka import; the caller supplies the receive time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import lru_cache
from typing import Any

import msgspec
import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.event_records import Event, decode_event, from_model
from schemas.events import EVENT_MODELS, SUPPORTED_SCHEMA_VERSIONS, touchpoint_adapter

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_FUTURE_SKEW_S = 300.0
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=timezone.utc)
# Kafka's timestamp type of a record stamped by the broker (the touchpoint topic's setting):
# only such a timestamp is passed as ``record_ts_ms``.
LOG_APPEND_TIME = 1
# The core validator behind touchpoint_adapter, without the keyword handling of
# TypeAdapter.validate_json (~1 us per call): the contract's verdict on what msgspec leaves.
_validate_json: Callable[[bytes], Any] = touchpoint_adapter.validator.validate_json

# Messages quote at most this much of an offending value: enough to recognise it, too little to
# copy personal data from a payload into headers and logs.
_QUOTE_CHARS = 64
# A message lists this many field errors and counts the rest, so it stays one readable line.
_MAX_LISTED_ERRORS = 3


class ErrorCode(str, Enum):
    """Why a message is not a valid event; the value is what the DLQ header and metrics carry."""

    invalid_json = "invalid_json"
    """Empty, or not parseable as JSON (syntax error, lone surrogate escape, nesting too deep)."""
    not_an_object = "not_an_object"
    """Valid JSON whose top level is not an object (array, string, number, null, bool)."""
    unknown_event_type = "unknown_event_type"
    """``event_type`` is present but not one of the contract's event types."""
    unsupported_schema_version = "unsupported_schema_version"
    """``schema_version`` is an integer this pipeline does not accept."""
    schema_violation = "schema_violation"
    """A field is missing, of the wrong type or out of range for its event type."""
    missing_identity = "missing_identity"
    """Neither ``customer_id`` nor ``anonymous_id`` is set."""
    bad_timestamp = "bad_timestamp"
    """``occurred_at`` lies before 2000-01-01."""
    future_timestamp = "future_timestamp"
    """``occurred_at`` lies more than the allowed skew (``CX_MAX_FUTURE_SKEW_S``) after receipt:
    a clock upstream is wrong. Receipt is the earlier of the reader's clock and the record's
    Kafka timestamp, so the worker and a lagging sink judge a record alike."""
    too_large = "too_large"
    """The message is larger than the size limit; it is not parsed at all."""
    invalid_utf8 = "invalid_utf8"
    """The bytes are not valid UTF-8."""
    internal_error = "internal_error"
    """The validator itself failed (a bug); kept apart so it never hides among bad input."""
    processing_error = "processing_error"
    """A valid event whose scoring failed unexpectedly (set by the ingest agent, not here)."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """A rejected message: the code, and a message of the form ``<field>: <what is wrong>``."""

    code: ErrorCode
    message: str


def validate_event(
    value: bytes | None,
    *,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
    record_ts_ms: int | None = None,
) -> Event | Invalid:
    """Parse and check one message value.

    Returns the typed event (a ``schemas.event_records.Event`` Struct, with the attributes of the
    pydantic model of its type) or an :class:`Invalid`. Never raises
    for any ``value``: an unexpected failure inside the validator comes back as
    ``ErrorCode.internal_error``. ``now`` is the receive time and must be timezone-aware
    (a naive ``now`` is a programming error and raises ``ValueError``).

    Checks, in order: size (before any parsing), JSON syntax and UTF-8, top-level object,
    ``event_type``, ``schema_version``, the per-type schema, identity, and the ``occurred_at``
    range ``[2000-01-01, receipt + max_future_skew_s]`` where receipt is the earlier of ``now``
    and ``record_ts_ms`` (the broker's append time of the record, when the topic keeps it): a
    reader that lags (a sink catching up) judges a record as one that kept up would. A message
    in the contract's plain form is parsed once, by msgspec, straight into the event Struct;
    anything else is parsed by the pydantic contract, which accepts it (a lax form, converted)
    or names the error (classifying a failure re-parses it with orjson). Both paths accept,
    reject and report exactly alike.
    """
    if now.tzinfo is None:
        raise ValueError("validate_event needs a timezone-aware `now`")
    if not value:
        return Invalid(ErrorCode.invalid_json, "value: empty message")
    try:
        if len(value) > max_bytes:
            return Invalid(
                ErrorCode.too_large,
                f"value: {len(value)} bytes exceeds the limit of {max_bytes} bytes",
            )
        try:
            event = decode_valid(value)
        except ValidationError as exc:
            return _classify_failure(value, exc.errors(include_url=False))
        # The rules the models do not express, inlined: this is the hot path of the ingest agent.
        if event.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            return _unsupported_version(event.schema_version)
        if event.customer_id is None and event.anonymous_id is None:
            return Invalid(
                ErrorCode.missing_identity,
                "customer_id, anonymous_id: at least one of them is required",
            )
        occurred_at = event.occurred_at
        if occurred_at < EARLIEST_OCCURRED_AT:
            return Invalid(
                ErrorCode.bad_timestamp,
                f"occurred_at: {occurred_at.isoformat()} is before {EARLIEST_OCCURRED_AT.date()}",
            )
        if occurred_at > now + _skew(max_future_skew_s):
            return _future(occurred_at, now, max_future_skew_s)
        if record_ts_ms is not None and record_ts_ms > 0:
            sent_at_s = record_ts_ms / 1000
            if (occurred_at.timestamp() > sent_at_s + max_future_skew_s
                    and sent_at_s < now.timestamp()):
                return _future(occurred_at, datetime.fromtimestamp(sent_at_s, timezone.utc),
                               max_future_skew_s)
        return event
    except Exception as exc:  # the contract is "never raises": a validator bug is a code too
        return Invalid(ErrorCode.internal_error, f"value: validator failed ({type(exc).__name__})")


def decode_valid(value: bytes) -> Event:
    """The event in ``value`` without the envelope checks: msgspec's plain form, else the
    pydantic contract (:func:`validate_event`'s parse, which adds the checks; the pipeline
    also decodes the kept bytes of a state's applied events with it when the state must be
    rebuilt). Raises ``ValueError`` (a ``pydantic.ValidationError``) for a value the contract
    rejects."""
    try:
        return decode_event(value)
    except msgspec.DecodeError:
        return from_model(_validate_json(value))


def _future(occurred_at: datetime, received: datetime, max_future_skew_s: float) -> Invalid:
    return Invalid(
        ErrorCode.future_timestamp,
        f"occurred_at: {occurred_at.isoformat()} is more than {max_future_skew_s:g} s "
        f"after the receive time {received.astimezone(timezone.utc).isoformat()}",
    )


@lru_cache(maxsize=16)
def _skew(seconds: float) -> timedelta:
    # Building a timedelta from a float costs more than the comparison it serves.
    return timedelta(seconds=seconds)


def _classify_failure(value: bytes, errors: Sequence[ErrorDetails]) -> Invalid:
    """Turn a failed ``validate_json`` into the most specific code.

    pydantic reports what failed but not whether the bytes were UTF-8, nor the ``schema_version``
    of an event whose shape is from another version, so this re-reads the value with orjson.
    """
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid(
            ErrorCode.invalid_utf8,
            f"value: invalid UTF-8 byte 0x{value[exc.start]:02x} at offset {exc.start}",
        )
    try:
        document: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid(ErrorCode.invalid_json, f"value: {exc}")
    if errors and errors[0]["type"] == "json_invalid":
        # orjson accepts documents jiter refuses (e.g. nesting deeper than its recursion limit).
        return Invalid(ErrorCode.invalid_json, f"value: {errors[0]['msg']}")
    if not isinstance(document, dict):
        return Invalid(
            ErrorCode.not_an_object,
            f"value: expected a JSON object, got {_json_kind(document)}",
        )
    if "event_type" not in document:
        return Invalid(ErrorCode.schema_violation, "event_type: Field required")
    event_type = document["event_type"]
    if not isinstance(event_type, str) or event_type not in EVENT_MODELS:
        return Invalid(
            ErrorCode.unknown_event_type,
            f"event_type: {_quote(event_type)} is not one of {', '.join(EVENT_MODELS)}",
        )
    version = document.get("schema_version")
    # bool is an int subclass; `true` is a type error for the schema, not a version.
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and (version not in SUPPORTED_SCHEMA_VERSIONS)
    ):
        return _unsupported_version(version)
    return Invalid(ErrorCode.schema_violation, _describe_errors(errors, tag=event_type))


def _unsupported_version(version: int) -> Invalid:
    supported = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
    return Invalid(
        ErrorCode.unsupported_schema_version,
        f"schema_version: {_quote(version)} is not supported (supported: {supported})",
    )


def _describe_errors(errors: Sequence[ErrorDetails], *, tag: str) -> str:
    """``path: message`` for the first few errors, e.g. ``properties.url: Field required``."""
    parts = [_describe_error(error, tag=tag) for error in errors[:_MAX_LISTED_ERRORS]]
    if len(errors) > _MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_LISTED_ERRORS} more")
    return "; ".join(parts) if parts else "value: does not match the event schema"


def _describe_error(error: ErrorDetails, *, tag: str) -> str:
    loc = list(error["loc"])
    # The discriminated union prefixes every location with the tag ("survey_answer").
    if loc and loc[0] == tag:
        loc = loc[1:]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    ctx = error.get("ctx") or {}
    # A ValueError raised by a model validator reads better without pydantic's "Value error, ".
    text = str(ctx["error"]) if error["type"] == "value_error" and "error" in ctx else error["msg"]
    return f"{path or 'value'}: {text}"


def _json_kind(document: Any) -> str:
    if isinstance(document, list):
        return "an array"
    if isinstance(document, str):
        return "a string"
    if isinstance(document, bool):
        return "a boolean"
    if isinstance(document, int | float):
        return "a number"
    return "null"


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."
