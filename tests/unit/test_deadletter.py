"""Dead-letter headers: written once, read back exactly, robust to any message text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.deadletter import (
    DEAD_LETTER_HEADERS,
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    HEADER_RECEIVED_AT,
    HEADER_SOURCE_OFFSET,
    MAX_MESSAGE_CHARS,
    DeadLetterInfo,
    dead_letter_headers,
    format_received_at,
    parse_dead_letter_headers,
)
from streams.core.validation import ErrorCode, Invalid

RECEIVED = datetime(2026, 11, 23, 10, 15, 0, 123456, tzinfo=timezone.utc)
INVALID = Invalid(ErrorCode.schema_violation, "properties: score 11 is outside the nps scale 0-10")


def headers(
    invalid: Invalid = INVALID, *, received_at: datetime = RECEIVED
) -> list[tuple[str, bytes]]:
    return dead_letter_headers(
        invalid, topic="cx.touchpoints", partition=3, offset=4411, received_at=received_at
    )


def test_headers_have_the_documented_names_values_and_order() -> None:
    assert headers() == [
        ("cx-error-code", b"schema_violation"),
        ("cx-error-message", b"properties: score 11 is outside the nps scale 0-10"),
        ("cx-source-topic", b"cx.touchpoints"),
        ("cx-source-partition", b"3"),
        ("cx-source-offset", b"4411"),
        ("cx-received-at", b"2026-11-23T10:15:00.123Z"),
    ]
    assert [name for name, _ in headers()] == list(DEAD_LETTER_HEADERS)


def test_received_at_is_written_in_utc() -> None:
    berlin = RECEIVED.astimezone(timezone(timedelta(hours=1)))
    assert dict(headers(received_at=berlin))[HEADER_RECEIVED_AT] == b"2026-11-23T10:15:00.123Z"


def test_naive_received_at_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_received_at(datetime(2026, 11, 23))  # noqa: DTZ001


def test_round_trip() -> None:
    info = parse_dead_letter_headers(headers())
    assert info == DeadLetterInfo(
        code="schema_violation",
        message=INVALID.message,
        source_topic="cx.touchpoints",
        source_partition=3,
        source_offset=4411,
        received_at=datetime(2026, 11, 23, 10, 15, 0, 123000, tzinfo=timezone.utc),
    )


def test_long_message_is_cut_to_the_limit() -> None:
    long = Invalid(ErrorCode.invalid_json, "value: " + "é" * 5000)
    raw = dict(headers(long))[HEADER_ERROR_MESSAGE]
    text = raw.decode("utf-8")
    assert len(text) == MAX_MESSAGE_CHARS
    assert text.endswith("...")
    assert text.startswith("value: éé")


@given(st.text(max_size=3000))
def test_any_message_text_survives(message: str) -> None:
    written = headers(Invalid(ErrorCode.schema_violation, message))
    assert all(isinstance(value, bytes) for _, value in written)
    read = parse_dead_letter_headers(written).message
    assert read is not None
    if len(message) <= MAX_MESSAGE_CHARS:
        assert read == message
    else:
        assert read == message[: MAX_MESSAGE_CHARS - 3] + "..."


def test_lone_surrogate_in_a_message_is_escaped_not_fatal() -> None:
    raw = dict(headers(Invalid(ErrorCode.schema_violation, "comment: \ud800")))
    assert raw[HEADER_ERROR_MESSAGE] == b"comment: \\ud800"


def test_mapping_headers_and_foreign_headers_are_accepted() -> None:
    mapping = {name: value for name, value in headers()}
    mapping["traceparent"] = b"00-abc"
    assert parse_dead_letter_headers(mapping) == parse_dead_letter_headers(headers())


def test_missing_and_damaged_headers_become_none() -> None:
    damaged = [
        (HEADER_ERROR_CODE, b"too_large"),
        (HEADER_SOURCE_OFFSET, b"not-a-number"),
        (HEADER_RECEIVED_AT, b"\xff\xfe yesterday"),
        (HEADER_ERROR_MESSAGE, None),
    ]
    info = parse_dead_letter_headers(damaged)
    assert info == DeadLetterInfo("too_large", None, None, None, None, None)
    assert parse_dead_letter_headers(None) == DeadLetterInfo(None, None, None, None, None, None)


def test_naive_received_at_header_is_not_trusted() -> None:
    info = parse_dead_letter_headers([(HEADER_RECEIVED_AT, b"2026-11-23T10:15:00")])
    assert info.received_at is None


def test_repeated_header_last_value_wins() -> None:
    info = parse_dead_letter_headers([(HEADER_ERROR_CODE, b"a"), (HEADER_ERROR_CODE, b"b")])
    assert info.code == "b"


def _headers() -> list[tuple[str, bytes]]:
    from datetime import datetime, timezone

    from streams.core.deadletter import dead_letter_headers
    from streams.core.validation import ErrorCode, Invalid

    return dead_letter_headers(Invalid(ErrorCode.too_large, "value: too big"), topic="t",
                               partition=1, offset=7,
                               received_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_a_value_that_fits_is_kept_byte_for_byte() -> None:
    from streams.core.deadletter import fit_dead_letter_value, original_value

    headers = _headers()
    value, sent = fit_dead_letter_value(b"x" * 100, headers, limit=100)
    assert value == b"x" * 100 and sent == headers
    assert original_value(value, sent) == b"x" * 100


def test_an_oversize_value_is_compressed_and_given_back_whole() -> None:
    """A 4 MB event that reached the worker gzip-compressed must not halt the dead-letter send."""
    from streams.core.deadletter import (
        MAX_DEAD_LETTER_VALUE_BYTES,
        fit_dead_letter_value,
        original_value,
        value_omitted,
    )

    big = b'{"event_type":"page_view","padding":"' + b"ab" * 2_000_000 + b'"}'
    value, headers = fit_dead_letter_value(big, _headers())
    assert value is not None and len(value) <= MAX_DEAD_LETTER_VALUE_BYTES < len(big)
    assert ("cx-value-encoding", b"gzip") in headers
    assert ("cx-original-bytes", str(len(big)).encode()) in headers
    assert original_value(value, headers) == big
    assert value_omitted(headers) is None


def test_an_incompressible_oversize_value_is_left_out_with_its_reason() -> None:
    import hashlib
    import os

    from streams.core.deadletter import fit_dead_letter_value, original_value, value_omitted

    noise = os.urandom(4096)
    value, headers = fit_dead_letter_value(noise, _headers(), limit=1024)
    assert value is None and original_value(value, headers) is None
    reason = value_omitted(headers)
    assert reason is not None and hashlib.sha256(noise).hexdigest() in reason
    assert "4096 bytes" in reason and "source offset" in reason
