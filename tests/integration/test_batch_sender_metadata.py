"""A topic the worker's producer sends to stays in its metadata (``track_topics_sent_to``).

aiokafka 0.14 refreshes metadata for the topics it tracks (``client._topics``; every topic while
it tracks none), and ``send_batch`` tracks a topic only when the metadata at hand lacks it. A
topic first sent to while the metadata listed every topic was never tracked: the next update for
the tracked topics dropped it, and its next batch had no leader. The sender then forced metadata
updates in a busy loop that never brought the topic back, and the batch waited for Faust's
producer request timeout (1,200 s), the worker's pipeline with it. Seen once in `make bench`: a
changelog batch "not acknowledged by the broker" for 270 s while the broker listed the
partition's leader. The test checks the cause on a producer mended as the worker's
(``BatchProducer`` applies ``track_topics_sent_to``), sending through ``BatchSender``: after
another topic is tracked, the producer's metadata still knows the leader of the topic sent to
(a batch arriving in the accumulator at that moment is a race, not reproduced here).
"""

from __future__ import annotations

import asyncio

from streams.faust_internals import BatchSender, track_topics_sent_to
from streams.processing import Output
from tests.integration.conftest import Stack


async def _send_while_another_topic_is_tracked(bootstrap: str, first: str,
                                                other: str) -> tuple[bool, bool]:
    from aiokafka import AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    track_topics_sent_to(producer.client)
    await producer.start()
    try:
        client = producer.client
        assert not client._topics  # tracks nothing: a metadata update lists every topic
        await client.force_metadata_update()
        assert client.cluster.partitions_for_topic(first) == {0}
        sender = BatchSender(lambda: producer)
        deliveries = await sender.send([Output(first, b"k", b"1", partition=0)])
        # Meanwhile something else (another output topic, Faust) makes the producer track
        # another topic: its metadata updates now ask for the tracked topics only.
        await client.add_topic(other)
        known = client.cluster.leader_for_partition(TopicPartition(first, 0)) is not None
        try:
            for delivery in deliveries:
                await asyncio.wait_for(asyncio.shield(delivery.future), 15)
        except asyncio.TimeoutError:
            return known, False
        return known, True
    finally:
        await asyncio.wait_for(producer.stop(), 60)


def test_a_topic_sent_to_stays_in_the_producers_metadata(stack: Stack) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    first, other = f"it-{stack.run_id}.md-first", f"it-{stack.run_id}.md-other"
    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(first, 1, 1), NewTopic(other, 1, 1)])
    finally:
        admin.close()
    known, delivered = asyncio.run(_send_while_another_topic_is_tracked(
        stack.endpoints.kafka_bootstrap, first, other))
    assert known, f"the producer's metadata lost {first} once it tracked {other}"
    assert delivered, f"the batch to {first} was not delivered within 15 s"
