"""The project's partitioner: which partition holds a customer's state.

It is Kafka's default for keyed records in the Java client, kafka-python and aiokafka:
``murmur2(key) & 0x7fffffff % partitions``. Producers that use another one (librdkafka clients
such as kcat or confluent-kafka default to a crc32-based partitioner) still work: the worker
scores an event in place only when it arrived on the partition this function gives its
customer, and forwards every other event through the keyed topic to that partition (one extra
hop; see docs/events.md).
"""

from __future__ import annotations

from typing import Final

from kafka.partitioner.default import murmur2

# Customer ids whose partition is remembered, per partition count (then forgotten all at once).
CACHED_CUSTOMERS: Final = 1 << 17
_KNOWN: Final[dict[int, dict[str, int]]] = {}


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed record (murmur2, positive, modulo)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def customer_partition(customer_id: str, partitions: int) -> int:
    """:func:`partition_for` of a customer id, remembered (murmur2 in Python costs ~5 us).

    Compiled with the worker (streams/core/native.py, WORKER_MODULES): the pipeline calls it
    for every event. A str-keyed dict per partition count, where ``functools.lru_cache``
    hashed and compared a tuple key (174 ns against 59 in a loop, a cache miss or two more in
    the worker)."""
    known = _KNOWN.get(partitions)
    if known is None:
        known = _KNOWN[partitions] = {}
    partition = known.get(customer_id)
    if partition is None:
        if len(known) >= CACHED_CUSTOMERS:
            known.clear()
        partition = known[customer_id] = partition_for(customer_id.encode(), partitions)
    return partition
