"""Issue 12: two upstream apps publish one customer's events with different partitioners (a
kafka-python app: murmur2; a librdkafka app, confluent-kafka's default: crc32-based). The
customer's state stays one and multi-event rules still fire."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from confluent_kafka import Producer

from streams.partitioner import customer_partition
from tests.integration.conftest import Stack, WorkerProcess, publish
from tests.integration.services import wait_until
from tests.integration.test_alerts_e2e import _alerts, _metric_total
from tests.journeys import repeated_unresolved_contacts


def _librdkafka_publish(bootstrap: str, topic: str, key: bytes, value: bytes) -> int:
    """Publish with confluent-kafka's default partitioner; returns the partition it chose."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    chosen: list[int] = []

    def delivered(err: object, msg: object) -> None:
        assert err is None, err
        chosen.append(msg.partition())  # type: ignore[attr-defined]

    producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    return chosen[0]


def test_one_customer_published_by_murmur2_and_crc32_producers_keeps_one_state(
    stack: Stack, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = stack.settings()
    partitions = settings.touchpoint_partitions
    # A customer whom the two partitioners put on different partitions.
    customer = next(c for c in (f"c-{stack.run_id}-{n}" for n in range(200))
                    if zlib.crc32(c.encode()) % partitions
                    != customer_partition(c, partitions))
    journey = repeated_unresolved_contacts(customer)
    first, second = journey.payloads()
    worker = start_worker()

    # The first contact from the Java/kafka-python app, the second from the librdkafka app.
    publish(stack.endpoints.kafka_bootstrap, settings.topic_touchpoints,
            [(customer.encode(), first)])
    crc_partition = _librdkafka_publish(stack.endpoints.kafka_bootstrap,
                                        settings.topic_touchpoints, customer.encode(), second)
    assert crc_partition != customer_partition(customer, partitions), "the test needs two"

    wait_until(lambda: _metric_total(worker, "cx_events_processed_total") >= 2, 60,
               "both contacts to be scored")
    alerts = _alerts(stack, expect=1, settle_s=2)
    assert [(a["rule"], a["customer_id"]) for a in alerts] == [("repeat_contact", customer)]
    assert alerts[0]["alert_id"] == journey.expected_alert_ids()["repeat_contact"]
    assert sorted(alerts[0]["evidence"]) == sorted(
        journey.evidence["repeat_contact"])
    forwarded = _metric_total(worker, "cx_messages_consumed_total{",
                              f'topic="{settings.app_id}.touchpoints.keyed"')
    assert forwarded == 1  # only the crc32-partitioned event took the extra hop
