"""Dead-letter headers: why a message was rejected and where it came from.

A dead letter keeps the rejected message's key and value byte-for-byte; everything the pipeline
knows about the rejection travels in Kafka headers named here, so the writer (the ingest agent)
and the readers (``cxsignals dlq show/replay``, the ClickHouse sink) agree on one format.

One exception keeps an oversize message from halting the worker: a value larger than
:data:`MAX_DEAD_LETTER_VALUE_BYTES` (a ``too_large`` event that reached the worker compressed)
is stored gzip-compressed, marked ``cx-value-encoding: gzip`` with its original size; if even
that does not fit, the value is left out, marked ``cx-value-omitted`` with the reason, its size
and SHA-256, and the original stays at its source offset (``cx-source-*``) until that topic's
retention removes it. :func:`original_value` gives the original bytes back.

Pure: no Faust or Kafka import; headers are ``(name, bytes)`` pairs, the form both aiokafka and
kafka-python produce and accept.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from schemas.limits import MAX_EVENT_BYTES
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
HEADER_VALUE_ENCODING = "cx-value-encoding"
HEADER_ORIGINAL_BYTES = "cx-original-bytes"
HEADER_VALUE_OMITTED = "cx-value-omitted"
# The largest value a dead letter carries as is: far below the topic's and the producer's limit.
MAX_DEAD_LETTER_VALUE_BYTES = MAX_EVENT_BYTES
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


def fit_dead_letter_value(
    value: bytes | None, headers: list[tuple[str, bytes]], *,
    limit: int = MAX_DEAD_LETTER_VALUE_BYTES,
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value and headers to send for a dead letter whose value may exceed ``limit``: the
    value as is when it fits, else gzip-compressed, else left out (see the module docstring).
    ``headers`` is not modified."""
    if value is None or len(value) <= limit:
        return value, headers
    size = str(len(value)).encode()
    packed = gzip.compress(value, compresslevel=6, mtime=0)
    if len(packed) <= limit:
        return packed, [*headers, (HEADER_VALUE_ENCODING, b"gzip"), (HEADER_ORIGINAL_BYTES, size)]
    reason = (f"{len(value)} bytes, {len(packed)} gzip-compressed, over the {limit}-byte limit "
              f"of a dead letter; sha256 {hashlib.sha256(value).hexdigest()}; the original "
              "stays at its source offset until that topic's retention removes it")
    return None, [*headers, (HEADER_VALUE_OMITTED, reason.encode()), (HEADER_ORIGINAL_BYTES, size)]


def original_value(value: bytes | None, headers: Headers | None) -> bytes | None:
    """The rejected message's value as it was received (None when it was left out); a value
    that says it is gzip-compressed but is not comes back as stored."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    if value is None or not any(name == HEADER_VALUE_ENCODING and raw == b"gzip"
                                for name, raw in pairs):
        return value
    try:
        return gzip.decompress(value)
    except (OSError, EOFError):
        return value


def value_omitted(headers: Headers | None) -> str | None:
    """Why the dead letter carries no value (None: it carries one)."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, raw in pairs:
        if name == HEADER_VALUE_OMITTED and isinstance(raw, bytes):
            return raw.decode("utf-8", "replace")
    return None


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
