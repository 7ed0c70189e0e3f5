"""Pure mapping of pipeline records to ClickHouse rows (tuples in the tables' column order).

Each table's column order is fixed in :data:`TABLE_COLUMNS` and matches the DDL in
sinks/sql (a test compares them). Times go out as epoch seconds (DateTime,
UTC) plus epoch milliseconds where sub-second order matters, so the writer never pays for
timezone conversions. There is no Nullable column (on 18.16 and in clickhouse-driver they cost
about half the insert time): absent text is ``''``, absent codes and money ``0``, absent
durations and customer value (``clv_12m``) :data:`ABSENT` (-1), and ``has_sentiment`` flags
whether ``sentiment`` is real.
No I/O, no clock: ``ingested_at`` is passed in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec
import orjson
from pydantic import BaseModel

from schemas.alerts import Alert
from schemas.event_records import Event, from_model
from schemas.events import EventBase, derive_stage
from schemas.records import AlertRecord, ScoreUpdateRecord
from schemas.scores import ScoreUpdate

Row = tuple[Any, ...]

ABSENT = -1
"""Stored in ``wait_s`` and ``load_time_ms`` when the event did not carry them, and in
``customer_scores.clv_12m`` when the score update did not (the column's default)."""

TOUCHPOINT_EVENTS = "touchpoint_events"
CUSTOMER_SCORES = "customer_scores"
ALERTS = "alerts"
DEAD_LETTERS = "dead_letters"

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    TOUCHPOINT_EVENTS: (
        "event_id", "event_type", "schema_version", "occurred_at", "occurred_ms",
        "customer_id", "anonymous_id", "session_id", "channel", "touchpoint",
        "journey_stage", "stage_derived", "segment", "timezone", "survey", "score",
        "cart_id", "cart_value", "order_id", "order_value", "currency", "resolved",
        "wait_s", "load_time_ms", "http_status", "product_id", "error_code", "reason",
        "sentiment", "has_sentiment", "properties", "ingested_at",
    ),
    CUSTOMER_SCORES: (
        "customer_id", "experience_score", "churn_risk", "journey_stage", "previous_stage",
        "explanation", "event_time", "event_time_ms", "updated_at", "updated_ms", "ingested_at",
        "clv_12m",
    ),
    ALERTS: (
        "alert_id", "rule", "kind", "customer_id", "event_time", "emitted_at",
        "experience_score", "churn_risk", "explanation", "evidence", "action", "context",
        "ingested_at", "control",
    ),
    DEAD_LETTERS: (
        "received_at", "code", "message", "source_topic", "source_partition", "source_offset",
        "raw", "raw_size", "ingested_at",
    ),
}

# The columns a redelivered row repeats exactly; BatchBuffer keeps one row per key per batch
# and the tables' ReplacingMergeTree sorting keys collapse the rest across batches.
DEDUP_COLUMNS: dict[str, tuple[str, ...]] = {
    TOUCHPOINT_EVENTS: ("event_id",),
    CUSTOMER_SCORES: ("customer_id", "updated_ms", "event_time_ms"),
    ALERTS: ("alert_id",),
    DEAD_LETTERS: ("source_topic", "source_partition", "source_offset"),
}


# The numeric columns of each table with their ClickHouse type (as in sinks/sql; a test compares
# them). Float64 and String columns hold whatever a row carries and are not listed. The writer
# checks a batch's columns against these ranges before the insert (:func:`out_of_range`): a
# value that does not fit is that row's permanent error, never a stuck batch.
NUMERIC_COLUMNS: dict[str, dict[str, str]] = {
    TOUCHPOINT_EVENTS: {
        "schema_version": "UInt16", "occurred_at": "DateTime", "occurred_ms": "UInt64",
        "stage_derived": "UInt8", "score": "Int16", "resolved": "UInt8", "wait_s": "Float32",
        "load_time_ms": "Int32", "http_status": "UInt16", "sentiment": "Float32",
        "has_sentiment": "UInt8", "ingested_at": "DateTime",
    },
    CUSTOMER_SCORES: {
        "event_time": "DateTime", "event_time_ms": "UInt64", "updated_at": "DateTime",
        "updated_ms": "UInt64", "ingested_at": "DateTime",
    },
    ALERTS: {"event_time": "DateTime", "emitted_at": "DateTime", "ingested_at": "DateTime",
             "control": "UInt8"},
    DEAD_LETTERS: {
        "received_at": "DateTime", "source_partition": "Int32", "source_offset": "Int64",
        "raw_size": "UInt32", "ingested_at": "DateTime",
    },
}
FLOAT32_MAX = 3.4028234663852886e38
TYPE_RANGES: dict[str, tuple[int | float, int | float]] = {
    "UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1), "Int16": (-(2**15), 2**15 - 1), "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1), "DateTime": (0, 2**32 - 1),
    "Float32": (-FLOAT32_MAX, FLOAT32_MAX),
}
VALUE_OUT_OF_RANGE = 321
"""ClickHouse's VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE: the code given to rows the sink's own range
check rejects before the insert."""

# Each table is PARTITION BY toYYYYMM(<this DateTime column>) in UTC (a test reads the DDL).
PARTITION_COLUMNS: dict[str, str] = {
    TOUCHPOINT_EVENTS: "occurred_at",
    CUSTOMER_SCORES: "updated_at",
    ALERTS: "event_time",
    DEAD_LETTERS: "received_at",
}
MAX_PARTITIONS_PER_INSERT = 100
"""ClickHouse's default ``max_partitions_per_insert_block`` (servers from 19.x on refuse an
insert block that touches more partitions, code 252)."""


def out_of_range(table: str, columns: Sequence[Sequence[Any]]) -> dict[int, str]:
    """Rows (by position) holding a value their column's type cannot hold, with the reason.

    ``columns`` in :data:`TABLE_COLUMNS` order (what ``to_columns`` returns). Cheap when all
    values fit: one ``min``/``max`` per column (plus a ``sum`` for Float32 ones, so that a NaN,
    which fits, cannot hide a neighbour that does not). A column whose values are not numbers is
    left to the server (its error then quarantines the row).
    """
    bad: dict[int, str] = {}
    names = TABLE_COLUMNS[table]
    for name, ch_type in NUMERIC_COLUMNS[table].items():
        column = columns[names.index(name)]
        if not column:
            continue
        low, high = TYPE_RANGES[ch_type]
        try:
            fits = low <= min(column) and max(column) <= high
            if fits and ch_type == "Float32":
                # min/max are unreliable around a NaN (which fits): a finite sum proves that
                # there is none (nor an infinity), else look at every value.
                fits = math.isfinite(sum(column)) or not any(v > high or v < low for v in column)
        except TypeError:
            continue
        if fits:
            continue
        for index, value in enumerate(column):
            if value > high or value < low:
                bad.setdefault(
                    index, f"column {name}: {value!r} is outside {ch_type} [{low}, {high}]"
                )
    return bad


def _month(epoch_s: int) -> int:
    moment = time.gmtime(epoch_s)
    return moment.tm_year * 12 + moment.tm_mon - 1


def split_by_partition(
    table: str, rows: Sequence[Row], limit: int = MAX_PARTITIONS_PER_INSERT
) -> list[list[int]]:
    """Positions of ``rows`` in groups whose rows fall in at most ``limit`` months of the
    table's partition column, so that no insert block touches more partitions than a server
    accepts. One group, found with a ``min``/``max``, when the rows span fewer months than that
    (the normal case: every row in the current month); otherwise the months in order, ``limit``
    per group.
    """
    if not rows:
        return []
    position = TABLE_COLUMNS[table].index(PARTITION_COLUMNS[table])
    stamps = [row[position] for row in rows]
    if _month(max(stamps)) - _month(min(stamps)) < limit:
        return [list(range(len(rows)))]
    by_month: dict[int, list[int]] = {}
    for index, stamp in enumerate(stamps):
        by_month.setdefault(_month(stamp), []).append(index)
    months = sorted(by_month)
    return [
        [index for month in months[start:start + limit] for index in by_month[month]]
        for start in range(0, len(months), limit)
    ]


def _key_function(table: str) -> Callable[[Row], Hashable]:
    positions = tuple(TABLE_COLUMNS[table].index(c) for c in DEDUP_COLUMNS[table])
    if len(positions) == 1:
        (position,) = positions
        return lambda row: row[position]
    return lambda row: tuple(row[p] for p in positions)


DEDUP_KEYS: dict[str, Callable[[Row], Hashable]] = {t: _key_function(t) for t in DEDUP_COLUMNS}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_s(moment: datetime) -> int:
    """Whole UTC epoch seconds (floored) of an aware datetime: what a DateTime column stores.
    The last moment's are kept (one tuple: safe across threads): every row a fetch gives is
    stamped with the same ``ingested_at``."""
    global _last_epoch_s
    last = _last_epoch_s
    if last[0] is moment:
        return last[1]
    seconds = epoch_ms(moment) // 1000
    _last_epoch_s = (moment, seconds)
    return seconds


_last_epoch_s: tuple[datetime | None, int] = (None, 0)


def epoch_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_dumps = orjson.dumps
_to_builtins = msgspec.to_builtins
_encode_json = msgspec.json.encode


def _json(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def as_dict(table: str, row: Row) -> dict[str, Any]:
    """A row as {column: value}, for tests, logs of schema errors and ad-hoc tools."""
    columns = TABLE_COLUMNS[table]
    if len(row) != len(columns):
        raise ValueError(f"{table} rows have {len(columns)} columns, got {len(row)}")
    return dict(zip(columns, row, strict=True))


def event_row(event: Event | EventBase, sentiment: float | None, *, ingested_at: datetime) -> Row:
    """The touchpoint_events row of a validated event (what ``validate_event`` returns; a
    pydantic contract model is converted first).

    ``sentiment`` is the comment's score in [-1, 1], or None when the event has no comment.
    """
    if not isinstance(event, Event):
        event = from_model(event)
    p = event.properties  # type: ignore[attr-defined]
    event_type = event.event_type
    survey = p.survey if event_type == "survey_answer" else ""
    wait_s = p.wait_s if event_type == "support_contact" else None
    load_time_ms = http_status = product_id = None
    if event_type == "page_view":
        load_time_ms, http_status, product_id = p.load_time_ms, p.http_status, p.product_id
    cart_value = getattr(p, "cart_value", None)
    order_value = getattr(p, "order_value", None)
    occurred_ms = epoch_ms(event.occurred_at)
    js = event.journey_stage
    return (
        event.event_id,
        event_type,
        event.schema_version,
        occurred_ms // 1000,
        occurred_ms,
        event.customer_id or "",
        event.anonymous_id or "",
        event.session_id or "",
        event.channel._value_,
        event.touchpoint or "",
        (js or derive_stage(event))._value_,  # type: ignore[arg-type]
        0 if js is not None else 1,
        event.segment or "",
        event.timezone or "",
        survey,
        p.score if survey else 0,
        getattr(p, "cart_id", None) or "",
        0.0 if cart_value is None else float(cart_value),
        getattr(p, "order_id", None) or "",
        0.0 if order_value is None else float(order_value),
        getattr(p, "currency", None) or "",
        1 if getattr(p, "resolved", None) is True else 0,
        float(ABSENT) if wait_s is None else float(wait_s),
        ABSENT if load_time_ms is None else int(load_time_ms),
        0 if http_status is None else http_status,
        product_id or "",
        getattr(p, "error_code", None) or "",
        getattr(p, "reason", None) or "",
        0.0 if sentiment is None else float(sentiment),
        0 if sentiment is None else 1,
        # UTF-8 JSON without absent properties, as bytes (a String column takes them as they
        # are); msgspec writes a float's exponent without "+" (1e16), orjson and the
        # publishers with it (1e+16): the same number to JSONExtract.
        _encode_json(p),
        epoch_s(ingested_at),
    )


def _model_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _explanation(contributions: Sequence[Any]) -> bytes:
    # UTF-8 JSON bytes (a String column takes them as they are). Records (msgspec Structs)
    # are encoded natively, pydantic Contributions through _model_json; the floats as the
    # published JSON has them (rounded points, no exponent above 1e16, where msgspec's and
    # orjson's forms differ).
    return _encode_json(contributions, enc_hook=_model_json)


def score_row(update: ScoreUpdateRecord | ScoreUpdate, *, ingested_at: datetime) -> Row:
    """The customer_scores row of a score update; explanation as a JSON list.

    ``update``: ``schemas.records.decode_score_update`` of the published bytes (or the pydantic
    model, slower to build). ``clv_12m`` is :data:`ABSENT` (-1) when the update has none.
    """
    clv_12m = update.clv_12m
    return (
        update.customer_id,
        float(update.experience_score),
        float(update.churn_risk),
        update.journey_stage.value,
        update.previous_stage.value if update.previous_stage is not None else "",
        _explanation(update.explanation),
        epoch_s(update.event_time),
        epoch_ms(update.event_time),
        epoch_s(update.updated_at),
        epoch_ms(update.updated_at),
        epoch_s(ingested_at),
        float(ABSENT) if clv_12m is None else float(clv_12m),
    )


def alert_row(alert: AlertRecord | Alert, *, ingested_at: datetime, control: bool = False) -> Row:
    """The alerts row of an alert; explanation and context as JSON.

    ``alert``: ``schemas.records.decode_alert`` of the published bytes (or the pydantic model).
    ``control``: a control alert (from the control topic: withheld, never sent).
    """
    return (
        alert.alert_id,
        alert.rule,
        alert.kind.value,
        alert.customer_id,
        epoch_s(alert.event_time),
        epoch_s(alert.emitted_at),
        float(alert.experience_score),
        float(alert.churn_risk),
        _explanation(alert.explanation),
        list(alert.evidence),
        alert.action,
        _json(alert.context),
        epoch_s(ingested_at),
        1 if control else 0,
    )


def dead_letter_row(
    *,
    code: str,
    message: str,
    topic: str,
    partition: int,
    offset: int,
    received_at: datetime,
    raw: bytes,
    ingested_at: datetime,
) -> Row:
    """The dead_letters row of a rejected message; the raw bytes are stored unchanged.

    ``partition`` and ``offset`` are -1 when the source position is unknown.
    """
    return (
        epoch_s(received_at),
        code,
        message,
        topic,
        partition,
        offset,
        bytes(raw),
        len(raw),
        epoch_s(ingested_at),
    )
