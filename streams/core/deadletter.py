"""Dead-letter headers: why a message was rejected and where it came from.

A dead letter keeps the rejected message's key and value byte-for-byte; everything the pipeline
knows about the rejection travels in Kafka headers named here, so the writer (the ingest agent)
and the readers (``cxsignals dlq show/replay``, the ClickHouse sink) agree on one format.

Pure: no Faust or Kafka import; headers are ``(name, bytes)`` pairs, the form both aiokafka and
kafka-python produce and accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from streams.core.validation import Invalid

HEADER_ERROR_CODE = "cx-error-code"
HEADER_ERROR_MESSAGE = "cx-error-message"
HEADER_SOURCE_TOPIC = "cx-source-topic"
HEADER_SOURCE_PARTITION = "cx-source-partition"
HEADER_SOURCE_OFFSET = "cx-source-offset"
HEADER_RECEIVED_AT = "cx-received-at"
DEAD_LETTER_HEADERS: tuple[str, ...] = (
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_TOPIC,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
    HEADER_RECEIVED_AT,
)
# Every header this pipeline adds starts with this; a replay drops them and keeps the rest.
HEADER_PREFIX = "cx-"
MAX_MESSAGE_CHARS = 1000

Headers = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None]


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """What the headers of one dead letter say; a field is None when its header is missing or
    unreadable (a dead letter written by another tool, or a damaged one)."""

    code: str | None
    message: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    received_at: datetime | None


def format_received_at(received_at: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a ``Z``: ``2026-11-23T10:15:00.123Z``.

    Raises ``ValueError`` for a naive datetime: the receive time must be unambiguous.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    text = received_at.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def dead_letter_headers(
    invalid: Invalid, *, topic: str, partition: int, offset: int, received_at: datetime
) -> list[tuple[str, bytes]]:
    """The headers to send with a dead letter, in :data:`DEAD_LETTER_HEADERS` order.

    Any message text survives: it is cut to :data:`MAX_MESSAGE_CHARS` characters and encoded as
    UTF-8 with unencodable characters (lone surrogates) escaped, so building the headers never
    fails on account of the text. Raises ``ValueError`` only for a naive ``received_at``.
    """
    message = invalid.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return [
        (HEADER_ERROR_CODE, invalid.code.value.encode()),
        (HEADER_ERROR_MESSAGE, message.encode("utf-8", "backslashreplace")),
        (HEADER_SOURCE_TOPIC, topic.encode("utf-8", "backslashreplace")),
        (HEADER_SOURCE_PARTITION, str(partition).encode()),
        (HEADER_SOURCE_OFFSET, str(offset).encode()),
        (HEADER_RECEIVED_AT, format_received_at(received_at).encode()),
    ]


def parse_dead_letter_headers(headers: Headers | None) -> DeadLetterInfo:
    """Read the dead-letter headers back; never raises.

    Accepts a list of ``(name, value)`` pairs or a mapping; names other than ours are ignored,
    and when a name repeats the last value wins (Kafka allows repeats; the writer sends each
    once). Undecodable or malformed values become None rather than an error, because the readers
    must still show the message itself.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    found: dict[str, str] = {}
    for name, raw in pairs:
        if name not in DEAD_LETTER_HEADERS:
            continue
        if isinstance(raw, bytes | bytearray | memoryview):
            found[name] = bytes(raw).decode("utf-8", "replace")
        elif isinstance(raw, str):
            found[name] = raw
    return DeadLetterInfo(
        code=found.get(HEADER_ERROR_CODE),
        message=found.get(HEADER_ERROR_MESSAGE),
        source_topic=found.get(HEADER_SOURCE_TOPIC),
        source_partition=_int_or_none(found.get(HEADER_SOURCE_PARTITION)),
        source_offset=_int_or_none(found.get(HEADER_SOURCE_OFFSET)),
        received_at=_datetime_or_none(found.get(HEADER_RECEIVED_AT)),
    )


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _datetime_or_none(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        # fromisoformat only learned the "Z" suffix in Python 3.11; the package supports 3.10.
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
