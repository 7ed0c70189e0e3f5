"""The project's partitioner is Kafka's default (murmur2), the one the Java client, kafka-python
and aiokafka use for keyed records; librdkafka's default (crc32) differs for most keys."""

from __future__ import annotations

import zlib

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.partitioner import customer_partition, partition_for


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_is_the_java_and_aiokafka_default(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, all_partitions,
                                                                  all_partitions)


def test_the_java_clients_murmur2_values() -> None:
    """Kafka's own UtilsTest cases (signed 32-bit murmur2), through toPositive and modulo."""
    for key, java_murmur2 in ((b"21", -973932308), (b"foobar", -790332482), (b"abc", 479470107)):
        for partitions in (1, 3, 4, 12):
            assert partition_for(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions
    assert customer_partition("foobar", 12) == (-790332482 & 0x7FFFFFFF) % 12


def test_librdkafka_default_disagrees_for_many_customers() -> None:
    """Why the worker checks the arrival partition: a crc32 producer puts a share of the
    customers elsewhere (librdkafka's consistent_random: crc32(key) % partitions)."""
    moved = sum(customer_partition(f"c-{n}", 4) != zlib.crc32(f"c-{n}".encode()) % 4
                for n in range(1000))
    assert 600 < moved < 900  # about three in four


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_a_remembered_customer_partition_is_partition_for_at_each_partition_count(
        customer: str, partitions: int) -> None:
    # asked twice (the second answer is the remembered one) and at another count in between
    first = customer_partition(customer, partitions)
    other = customer_partition(customer, partitions + 1)
    assert first == customer_partition(customer, partitions) \
        == partition_for(customer.encode(), partitions)
    assert other == partition_for(customer.encode(), partitions + 1)
