"""Unthrottled bulk publishing: aiokafka's batch API, several times faster than kafka-python.

kafka-python encodes every record in Python (~35 us of CPU per message here), which caps an
unthrottled run far below what pre-filling a benchmark topic needs. aiokafka (already pinned for
Faust) builds record batches in C: :func:`publish_bulk` fills one batch per partition and hands
full batches to the producer, partitioning keys with the Java client's murmur2 so that a key lands
on the same partition as with any other producer.

Delivery: at least once per message (acks=all, the client retries until its request timeout);
key and value bytes unchanged, per-key order kept (one key = one partition, batches of one
partition are sent in order). Failed batches are counted in ``PublishStats.failed``, never raised;
an unreachable broker or unknown topic raises :class:`BrokerUnavailable`. Ctrl-C stops reading
``messages``, sends what was read, and returns with ``interrupted=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from aiokafka.partitioner import DefaultPartitioner
from tqdm import tqdm

from cxsignals.simulator.delivery import MAX_REQUEST_BYTES, BrokerUnavailable, PublishStats
from cxsignals.simulator.journeys import SimMessage
from streams.kafka_security import PLAINTEXT, KafkaSecurity

BATCH_BYTES = 512 * 1024
# Remembered key -> partition answers (murmur2 is pure Python in aiokafka): bounded memory.
MAX_CACHED_KEYS = 1_000_000
PROGRESS_EVERY = 512  # messages between progress-bar updates: tqdm costs ~1 us a call


def publish_bulk(
    messages: Iterable[SimMessage],
    *,
    bootstrap_servers: str,
    topic: str,
    progress: bool,
    total: int | None = None,
    connect_timeout_s: float = 10.0,
    security: KafkaSecurity = PLAINTEXT,
) -> PublishStats:
    """Send ``messages`` to ``topic`` as fast as the client can; return what was delivered."""
    return asyncio.run(
        _publish_bulk(messages, bootstrap_servers, topic, progress, total, connect_timeout_s,
                      security)
    )


async def _start(bootstrap_servers: str, topic: str, timeout_s: float,
                 security: KafkaSecurity) -> tuple[Any, list[int]]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        **security.aiokafka_options(),
        acks="all",
        linger_ms=20,
        max_batch_size=BATCH_BYTES,
        max_request_size=MAX_REQUEST_BYTES,
        request_timeout_ms=60_000,
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        partitions = await asyncio.wait_for(producer.partitions_for(topic), timeout_s)
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        from streams.faust_internals import connection_problem

        problem = await connection_problem(bootstrap_servers, security)
        if problem is not None:
            raise BrokerUnavailable(f"cannot use Kafka at {bootstrap_servers}: {problem}") from None
        if isinstance(exc, TopicAuthorizationFailedError):
            raise BrokerUnavailable(
                f"not authorized to write to topic {topic!r} as "
                f"{security.describe()}: the Kafka ACLs do not allow it (docs/security.md)"
            ) from None
        raise BrokerUnavailable(
            f"cannot reach Kafka at {bootstrap_servers} or find topic {topic!r} within "
            f"{timeout_s:.0f} s ({type(exc).__name__}: {exc}); is the broker running "
            "(`make services`) and the topic created (`cxsignals topics create`)?"
        ) from exc
    return producer, sorted(partitions)


async def _publish_bulk(
    messages: Iterable[SimMessage],
    bootstrap_servers: str,
    topic: str,
    progress: bool,
    total: int | None,
    connect_timeout_s: float,
    security: KafkaSecurity,
) -> PublishStats:
    stats = PublishStats()
    producer, partitions = await _start(bootstrap_servers, topic, connect_timeout_s, security)
    partitioner = DefaultPartitioner()
    partition_of: dict[bytes, int] = {}
    batches: dict[int, Any] = {p: producer.create_batch() for p in partitions}
    pending: list[tuple[asyncio.Future[Any], int]] = []  # (delivery future, records in batch)
    bar = tqdm(
        total=total, unit=" ev", unit_scale=True, disable=not progress, mininterval=0.5,
        desc=f"-> {topic}", dynamic_ncols=True,
    )  # fmt: skip

    async def ship(partition: int) -> None:
        batch = batches[partition]
        count = batch.record_count()
        if count:
            pending.append((await producer.send_batch(batch, topic, partition=partition), count))
            batches[partition] = producer.create_batch()
        if len(pending) > 256:  # settle delivered batches so memory stays bounded
            await _settle(pending, stats, wait=False)

    started = time.perf_counter()
    unreported = 0
    try:
        try:
            for message in messages:
                key = message.key
                partition = partition_of.get(key)
                if partition is None:
                    if len(partition_of) >= MAX_CACHED_KEYS:
                        partition_of.clear()
                    partition = partition_of[key] = partitioner(key, partitions, partitions)
                if batches[partition].append(key=key, value=message.value, timestamp=None) is None:
                    await ship(partition)  # full: send it, the message opens the next batch
                    batches[partition].append(key=key, value=message.value, timestamp=None)
                stats.attempted += 1
                stats.value_bytes += len(message.value)
                stats.bad += message.is_bad
                unreported += 1
                if unreported >= PROGRESS_EVERY:
                    bar.update(unreported)
                    unreported = 0
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Python 3.11+ turns Ctrl-C into a cancellation of this task; older ones raise here.
            stats.interrupted = True
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()  # handled: the flush below must not see a pending cancellation
        for partition in partitions:
            await ship(partition)
        await _settle(pending, stats, wait=True)
    finally:
        stats.elapsed_s = time.perf_counter() - started
        bar.update(unreported)
        bar.set_postfix(bad=stats.bad, failed=stats.failed, refresh=False)
        bar.close()
        await producer.stop()
    return stats


async def _settle(
    pending: list[tuple[asyncio.Future[Any], int]], stats: PublishStats, *, wait: bool
) -> None:
    """Count failed batches among ``pending`` and drop the finished ones (all if ``wait``)."""
    if wait and pending:
        await asyncio.wait([future for future, _ in pending])
    still: list[tuple[asyncio.Future[Any], int]] = []
    for future, count in pending:
        if not future.done():
            still.append((future, count))
        elif future.cancelled() or future.exception() is not None:
            error = future.exception() if not future.cancelled() else asyncio.CancelledError()
            for _ in range(count):
                stats.record_error(error or RuntimeError("batch not delivered"))
    pending[:] = still
