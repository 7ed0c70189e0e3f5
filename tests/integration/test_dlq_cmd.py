"""``cxsignals dlq show/replay`` against the real broker: reasons shown, bytes unchanged."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import datetime, timezone

import pytest

from cxsignals import dlq_cmd
from cxsignals.settings import Settings
from cxsignals.topics_cmd import create_topics
from streams.core.deadletter import HEADER_PREFIX, dead_letter_headers
from streams.core.validation import ErrorCode, Invalid, validate_event
from tests.integration.conftest import Stack, consume_all

SURVEY_OUT_OF_SCALE = json.dumps(
    {
        "event_id": "e-1",
        "event_type": "survey_answer",
        "schema_version": 1,
        "occurred_at": "2026-11-23T10:15:00Z",
        "customer_id": "c-1042",
        "channel": "web",
        "properties": {"survey": "nps", "score": 11, "comment": "Zahlung schlug fehl — zweimal"},
    },
    ensure_ascii=False,
).encode()

# (key, value): every kind of bad message, including ones that are not text at all.
BAD_MESSAGES: list[tuple[bytes | None, bytes]] = [
    (b"c-1042", SURVEY_OUT_OF_SCALE),
    (b"c-7", b'{"event_id": '),
    (None, b"[1, 2, 3]"),
    (b"\x00\xffkey", b"\xff\xfe\x00\x01 binary garbage"),
    (b"a-9", b""),
    (b"c-8", b'{"x": "' + b"y" * (1_100_000) + b'"}'),
]
TRACE = ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


def run(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    dlq_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["dlq", *argv])
    return int(args.func(args, settings))


def publish_dead_letters(settings: Settings) -> list[Invalid]:
    from kafka import KafkaProducer

    now = datetime.now(timezone.utc)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        max_request_size=4 * 1024 * 1024,
    )
    reasons = []
    try:
        futures = []
        for offset, (key, value) in enumerate(BAD_MESSAGES):
            result = validate_event(value, now=now)
            assert isinstance(result, Invalid), value[:80]
            reasons.append(result)
            headers = dead_letter_headers(
                result,
                topic=settings.topic_touchpoints,
                partition=offset % 2,
                offset=offset,
                received_at=now,
            )
            futures.append(
                producer.send(settings.topic_dlq, key=key, value=value, headers=[*headers, TRACE])
            )
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
    return reasons


def _order(message: tuple[bytes | None, bytes | None]) -> tuple[bool, bytes, bytes]:
    key, value = message
    return (key is not None, key or b"", value or b"")


@pytest.fixture
def settings(stack: Stack) -> Settings:
    settings = stack.settings()
    create_topics(settings)
    return settings


def test_show_prints_every_reason(
    settings: Settings, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    reasons = publish_dead_letters(settings)
    assert {r.code for r in reasons} == {
        ErrorCode.schema_violation,
        ErrorCode.invalid_json,
        ErrorCode.not_an_object,
        ErrorCode.invalid_utf8,
        ErrorCode.too_large,
    }

    assert run(settings, "show", "--from-beginning", "--limit", "100") == 0
    out = capsys.readouterr()
    blocks = [b for b in out.out.split(f"{settings.topic_dlq}/") if b.strip()]
    assert len(blocks) == len(BAD_MESSAGES)
    for reason in reasons:
        assert f"  {reason.code.value}: {reason.message}\n" in out.out
    assert f"from {settings.topic_touchpoints}/" in out.out
    assert "score 11 is outside the nps scale 0-10" in out.out
    assert f"{len(BAD_MESSAGES)} in {settings.topic_dlq} in all" in out.err

    assert run(settings, "show", "--limit", "2") == 0
    newest = capsys.readouterr().out
    assert newest.count(f"{settings.topic_dlq}/") == 2

    assert run(settings, "show", "--code", "invalid_json") == 0
    only_json = capsys.readouterr().out
    assert only_json.count(f"{settings.topic_dlq}/") == 2
    assert "not_an_object" not in only_json and "invalid_json" in only_json


def test_replay_republishes_keys_and_values_byte_for_byte(
    settings: Settings, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_dead_letters(settings)
    bootstrap = stack.endpoints.kafka_bootstrap

    assert run(settings, "replay", "--dry-run") == 0
    assert f"dry run: {len(BAD_MESSAGES)} dead letters" in capsys.readouterr().out

    assert run(settings, "replay") == 0
    assert (
        f"re-published {len(BAD_MESSAGES)} of {len(BAD_MESSAGES)} dead letters"
        in capsys.readouterr().out
    )
    records = consume_all(
        bootstrap, settings.topic_touchpoints, expect=len(BAD_MESSAGES), settle_s=1
    )
    replayed = sorted(((r.key, r.value) for r in records), key=_order)
    assert replayed == sorted(BAD_MESSAGES, key=_order)
    for record in records:
        headers = record.headers
        assert TRACE in headers
        assert not [name for name, _ in headers if name.startswith(HEADER_PREFIX)]

    assert run(settings, "replay", "--code", "invalid_json", "--limit", "1") == 0
    assert "re-published 1 of 1 dead letters" in capsys.readouterr().out
    after = consume_all(
        bootstrap, settings.topic_touchpoints, expect=len(BAD_MESSAGES) + 1, settle_s=1
    )
    counts = Counter(r.value for r in after)
    twice = [value for value, count in counts.items() if count == 2]
    assert len(after) == len(BAD_MESSAGES) + 1 and len(twice) == 1
    again = validate_event(twice[0], now=datetime.now(timezone.utc))
    assert isinstance(again, Invalid) and again.code is ErrorCode.invalid_json


def test_missing_topic_is_a_clear_error(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = settings.model_copy(update={"topic_dlq": settings.topic_dlq + ".absent"})
    assert run(absent, "show") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: topic {absent.topic_dlq} does not exist")
    assert "Traceback" not in err
