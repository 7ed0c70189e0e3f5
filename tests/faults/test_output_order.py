"""Outputs of one customer must reach their topic partition in the order the pipeline produced
them: ``cx.scores`` is compacted and read as "the latest score per customer", so a score update
that overtakes a later one leaves a stale score as the latest.

Found by tests/faults/test_kill9.py (one run in three: the latest score update of one customer
on the scores topic was an older one than the worker's stored state had published). The cause,
shown here with the worker's own ``BatchSender`` against the real broker: up to
``durable_in_flight`` (16) durable phases hand records to the producer concurrently, and
aiokafka's ``MessageAccumulator.add_batch`` does not keep concurrent callers of one partition in
call order (a caller waiting for the pending batch to drain is re-checked after the drain, and
a caller arriving in between appends first). A worker catching up on a backlog (after a
restart) overlaps phases all the time.
"""

from __future__ import annotations

import asyncio

from streams.faust_internals import BatchSender
from streams.processing import Output
from tests.integration.conftest import Stack

PHASES = 3000
IN_FLIGHT = 16  # streams.pipeline.PipelineLimits.durable_in_flight


async def _send_in_phases(bootstrap: str, topic: str) -> list[int]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        sender = BatchSender(lambda: producer)

        async def phase(n: int) -> None:  # ScoringPipeline._durable: hand over, then wait
            deliveries = await sender.send([Output(topic, b"c-1", str(n).encode())])
            for delivery in deliveries:
                await delivery.future

        pending: list[asyncio.Future[None]] = []
        for n in range(PHASES):
            pending.append(asyncio.ensure_future(phase(n)))
            await asyncio.sleep(0.0005 * (n % 3))  # the next fetch is scored meanwhile
            while pending and (pending[0].done() or len(pending) > IN_FLIGHT):
                await pending.pop(0)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[int] = []
        while len(got) < PHASES:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(int(r.value) for r in records)
        return got
    finally:
        await consumer.stop()


def test_records_of_overlapping_durable_phases_keep_their_order(stack: Stack) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"it-{stack.run_id}.order"  # removed with the test's other topics
    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    got = asyncio.run(_send_in_phases(stack.endpoints.kafka_bootstrap, topic))
    overtaken = [(a, b) for a, b in zip(got, got[1:], strict=False) if b < a]
    assert overtaken == [], f"{len(overtaken)} records overtaken, e.g. {overtaken[:5]}"
    assert got == sorted(set(got))


