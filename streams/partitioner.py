"""The project's partitioner: which partition holds a customer's state.

It is Kafka's default for keyed records in the Java client, kafka-python and aiokafka:
``murmur2(key) & 0x7fffffff % partitions``. Producers that use another one (librdkafka clients
such as kcat or confluent-kafka default to a crc32-based partitioner) still work: the worker
scores an event in place only when it arrived on the partition this function gives its
customer, and forwards every other event through the keyed topic to that partition (one extra
hop; see docs/events.md).
"""

from __future__ import annotations

from functools import lru_cache

from kafka.partitioner.default import murmur2

CACHED_CUSTOMERS = 1 << 17


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed record (murmur2, positive, modulo)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=CACHED_CUSTOMERS)
def customer_partition(customer_id: str, partitions: int) -> int:
    """:func:`partition_for` of a customer id, remembered (murmur2 in Python costs ~5 us)."""
    return partition_for(customer_id.encode(), partitions)
