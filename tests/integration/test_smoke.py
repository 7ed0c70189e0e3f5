"""Smoke tests through the real services: the ground every other test stands on."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
from clickhouse_driver import Client
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from cxsignals.settings import ClickHouseParams
from tests.integration.conftest import Stack, WorkerProcess, consume_all
from tests.integration.services import Endpoints, http_get, wait_until


def test_kafka_produce_and_consume(endpoints: Endpoints) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all")
    payloads = [f"message-{i}".encode() for i in range(5)]
    for payload in payloads:
        producer.send(topic, key=b"k", value=payload)
    producer.flush(timeout=30)
    producer.close()
    records = consume_all(endpoints.kafka_bootstrap, topic, expect=5)
    assert [r.value for r in records] == payloads


def test_clickhouse_columnar_insert_and_select(endpoints: Endpoints) -> None:
    params = ClickHouseParams.from_url(endpoints.clickhouse_url)
    client = Client(host=params.host, port=params.port, user=params.user, password=params.password)
    table = f"default.smoke_{uuid.uuid4().hex[:8]}"
    client.execute(f"CREATE TABLE {table} (id UInt32, name String, at DateTime) ENGINE = Memory")
    try:
        at = datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc).replace(tzinfo=None)
        client.execute(
            f"INSERT INTO {table} (id, name, at) VALUES",
            [[1, 2, 3], ["a", "b", "c"], [at, at, at]],
            columnar=True,
        )
        rows = client.execute(f"SELECT id, name FROM {table} ORDER BY id")
        assert rows == [(1, "a"), (2, "b"), (3, "c")]
        assert client.execute(f"SELECT sum(id) FROM {table}") == [(6,)]
    finally:
        client.execute(f"DROP TABLE IF EXISTS {table}")


def _event(customer: str) -> bytes:
    return orjson.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "page_view", "schema_version": 1,
        "occurred_at": datetime.now(timezone.utc).isoformat(), "customer_id": customer,
        "channel": "web",
        "properties": {"url": "https://shop.example/", "load_time_ms": 120},
    })


def _metric(worker: WorkerProcess, line_prefix: str) -> float:
    for line in http_get(worker.metrics_url).splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_worker_joins_group_and_processes_a_message(stack: Stack, start_worker: object) -> None:
    assert callable(start_worker)
    worker: WorkerProcess = start_worker()
    settings = stack.settings()
    producer = KafkaProducer(bootstrap_servers=stack.endpoints.kafka_bootstrap, acks="all")
    producer.send(settings.topic_touchpoints, key=b"c-1", value=_event("c-1"))
    producer.flush(timeout=30)
    producer.close()

    processed = 'cx_events_processed_total{event_type="page_view"}'
    wait_until(lambda: _metric(worker, processed) >= 1.0, 60, "the worker to process the event")

    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:
        def committed() -> bool:
            offsets = admin.list_group_offsets(settings.app_id)[settings.app_id]
            topic = settings.topic_touchpoints
            return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic) >= 1

        wait_until(committed, 30, "the worker's consumer group to commit the offset")
    finally:
        admin.close()
