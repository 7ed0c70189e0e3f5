"""The simulator's publisher against the real broker: every message arrives byte-for-byte."""

from __future__ import annotations

import argparse
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from cxsignals.simulate_cmd import add_parser
from cxsignals.simulator import SimConfig, generate
from cxsignals.simulator.delivery import MAX_REQUEST_BYTES, BrokerUnavailable
from cxsignals.simulator.publisher import publish
from tests.integration.conftest import Stack, consume_all
from tests.integration.services import Endpoints, free_port

START = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


def _create_topic(bootstrap: str, partitions: int = 3) -> str:
    topic = f"it-sim-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # The too_large bad messages (1 MiB + 1 KiB) need a topic that accepts them.
        config = {"max.message.bytes": str(MAX_REQUEST_BYTES)}
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
    finally:
        admin.close()
    return topic


def _by_key(records: list[Any]) -> dict[bytes, list[bytes]]:
    per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for record in records:
        per_key[record.key].append(record.value)
    return per_key


@pytest.mark.parametrize("publisher", ["kafka-python", "bulk"])
def test_published_messages_are_consumed_unchanged_and_in_key_order(
    endpoints: Endpoints, publisher: str
) -> None:
    topic = _create_topic(endpoints.kafka_bootstrap)
    config = SimConfig(customers=100, seed=11, start=START, total_events=3000, bad_share=0.03)
    messages = list(generate(config))
    assert any(m.expected_error == "too_large" for m in messages)

    stats = publish(
        messages,
        bootstrap_servers=endpoints.kafka_bootstrap,
        topic=topic,
        # Unthrottled runs take the aiokafka batch path, paced ones kafka-python.
        rate_per_s=None if publisher == "bulk" else 100_000.0,
        progress=False,
    )
    assert stats.failed == 0, stats.first_error
    assert stats.sent == len(messages) and stats.bad == sum(m.is_bad for m in messages)

    records = consume_all(endpoints.kafka_bootstrap, topic, expect=len(messages), settle_s=1.0)
    assert len(records) == len(messages)
    sent_by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for m in messages:
        sent_by_key[m.key].append(m.value)
    # Same bytes, and per key the same order (one key = one partition).
    assert _by_key(records) == sent_by_key


def test_rate_limit_holds_against_the_broker(endpoints: Endpoints) -> None:
    topic = _create_topic(endpoints.kafka_bootstrap, partitions=1)
    config = SimConfig(customers=10, seed=1, start=START, total_events=120, bad_share=0.0)
    started = time.monotonic()
    stats = publish(
        generate(config),
        bootstrap_servers=endpoints.kafka_bootstrap,
        topic=topic,
        rate_per_s=200.0,
        progress=False,
    )
    elapsed_s = time.monotonic() - started
    assert stats.sent == 120
    # 20 burst tokens, then 100 more at 200/s: at least 0.5 s of sending.
    assert stats.elapsed_s >= 0.45 and elapsed_s >= 0.45


def test_unreachable_broker_is_a_clear_error(endpoints: Endpoints) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    messages = list(generate(SimConfig(customers=1, start=START, total_events=5)))
    started = time.monotonic()
    for rate_per_s in (None, 50.0):  # both publishers
        with pytest.raises(BrokerUnavailable, match=nowhere):
            publish(
                messages,
                bootstrap_servers=nowhere,
                topic="unused",
                rate_per_s=rate_per_s,
                progress=False,
                connect_timeout_s=2.0,
            )
    assert time.monotonic() - started < 20


def _simulate(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["simulate", *argv])


def test_simulate_command_publishes_and_reports_unreachable_broker(stack: Stack) -> None:
    topic = _create_topic(stack.endpoints.kafka_bootstrap, partitions=2)
    args = _simulate(
        "--events", "400", "--rate", "0", "--seed", "5", "--bad-share", "0", "--no-progress",
        "--start", "2026-01-05T08:00:00Z", "--event-gap-s", "0.5", "--topic", topic,
    )  # fmt: skip
    assert args.func(args, stack.settings()) == 0
    records = consume_all(stack.endpoints.kafka_bootstrap, topic, expect=400, settle_s=1.0)
    expected = SimConfig(
        customers=200, seed=5, start=START, total_events=400, event_gap_s=0.5, bad_share=0.0
    )
    values = [r.value for r in records if r.value is not None]
    assert len(values) == len(records)  # every record has a value
    assert sorted(values) == sorted(m.value for m in generate(expected))

    unreachable = stack.settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    assert args.func(args, unreachable) == 2
