"""Deliberately bad messages, one kind per dead-letter error code of the event contract.

Each bad value starts from a valid event and breaks exactly one thing, so the validator must give
it exactly the code it is built for (``SimMessage.expected_error``). Nothing here contains a
newline, so ``--dry-run`` output stays one message per line.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

# The order is the round-robin order in which the generator picks codes: any 9 consecutive bad
# messages cover every code (as many as there are codes).
BAD_CODES: tuple[str, ...] = (
    "invalid_json",
    "not_an_object",
    "unknown_event_type",
    "unsupported_schema_version",
    "schema_violation",
    "missing_identity",
    "bad_timestamp",
    "future_timestamp",
    "too_large",
    "invalid_utf8",
)

# The contract rejects values over 1 MiB; 1 KiB above it leaves no doubt. Producers need a
# max_request_size above this and the broker/topic max.message.bytes too (see publisher.py).
TOO_LARGE_BYTES = 1024 * 1024 + 1024

Event = dict[str, Any]


def _invalid_json(event: Event, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        whole = orjson.dumps(event)
        # Any proper prefix of a JSON object is invalid JSON; the template is ASCII, so every cut
        # is still valid UTF-8.
        return whole[: rng.randint(1, len(whole) - 1)]
    # A Python dict repr: single quotes and None, a classic producer bug.
    return repr(event).encode()


def _not_an_object(event: Event, rng: random.Random) -> bytes:
    variants: tuple[object, ...] = ([event], event["event_id"], 42, None, True)
    return orjson.dumps(rng.choice(variants))


def _unknown_event_type(event: Event, rng: random.Random) -> bytes:
    return orjson.dumps(
        {**event, "event_type": rng.choice(("page_vue", "refund_requested", "PageView"))}
    )


def _unsupported_schema_version(event: Event, rng: random.Random) -> bytes:
    return orjson.dumps({**event, "schema_version": rng.choice((0, 99, 1000))})


def _schema_violation(event: Event, rng: random.Random) -> bytes:
    props = event["properties"]
    variants: tuple[Event, ...] = (
        {**event, "channel": "fax"},
        {**event, "properties": {**props, "http_status": 700}},
        {**event, "properties": {**props, "load_time_ms": -5}},
        {**event, "properties": {k: v for k, v in props.items() if k != "url"}},
        {
            **event,
            "event_type": "survey_answer",
            "touchpoint": "nps_email",
            "properties": {"survey": "nps", "score": 11, "comment": "Loved it"},
        },
    )
    return orjson.dumps(rng.choice(variants))


def _missing_identity(event: Event, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return orjson.dumps({**event, "customer_id": None, "anonymous_id": None})
    stripped = {k: v for k, v in event.items() if k not in ("customer_id", "anonymous_id")}
    return orjson.dumps(stripped)


def _bad_timestamp(event: Event, rng: random.Random) -> bytes:
    # Before 2000-01-01: wrong whatever the validator's wall clock says.
    when = rng.choice(("1999-12-31T23:59:59Z", "1970-01-01T00:00:00.000Z"))
    return orjson.dumps({**event, "occurred_at": when})


def _future_timestamp(event: Event, rng: random.Random) -> bytes:
    # Centuries ahead: beyond any allowed clock skew whatever the validator's wall clock says.
    when = rng.choice(("2999-01-01T00:00:00Z", "2200-06-30T12:00:00+02:00"))
    return orjson.dumps({**event, "occurred_at": when})


def _too_large(event: Event, rng: random.Random) -> bytes:
    # An otherwise valid event; the padding is an unknown extra field, which the contract ignores.
    return orjson.dumps({**event, "padding": "x" * TOO_LARGE_BYTES})


def _invalid_utf8(event: Event, rng: random.Random) -> bytes:
    marker = "INVALID-UTF8-MARKER"
    whole = orjson.dumps({**event, "touchpoint": marker})
    # A Latin-1 encoded "é": what a producer that is not UTF-8 clean sends.
    return whole.replace(marker.encode(), rng.choice((b"caf\xe9", b"\xff\xfe", b"\xc3\x28")))


_BUILDERS: dict[str, Callable[[Event, random.Random], bytes]] = {
    "invalid_json": _invalid_json,
    "not_an_object": _not_an_object,
    "unknown_event_type": _unknown_event_type,
    "unsupported_schema_version": _unsupported_schema_version,
    "schema_violation": _schema_violation,
    "missing_identity": _missing_identity,
    "bad_timestamp": _bad_timestamp,
    "future_timestamp": _future_timestamp,
    "too_large": _too_large,
    "invalid_utf8": _invalid_utf8,
}


def bad_value(code: str, event: Event, rng: random.Random) -> bytes:
    """The bytes of a message that the validator must reject with ``code``.

    ``event`` must be a valid ``page_view`` event as a dict (it is not modified). Raises KeyError
    for a code not in :data:`BAD_CODES`. Deterministic for a given ``rng`` state.
    """
    return _BUILDERS[code](event, rng)
