"""Publishing simulated messages to Kafka: paced by a token bucket, with a progress bar.

Paced runs use kafka-python. Delivery: at least once per message handed to :func:`publish`
(acks=all, idempotent producer, retries inside the client until ``delivery_timeout_ms``); key and
value bytes are sent unchanged. Messages still buffered are flushed before :func:`publish`
returns, also after Ctrl-C. Failed deliveries are counted (``PublishStats.failed``, first error
kept), never raised; only an unreachable broker or a topic that cannot be found raises
:class:`BrokerUnavailable`.

Speed: kafka-python builds record batches in Python, so one producer tops out around 20k small
messages/s on one core (and needs the ``crc32c`` package: the pure-Python checksum is 3x slower).
Unthrottled runs therefore go to :func:`cxsignals.simulator.bulk.publish_bulk` (aiokafka's C batch
builder), with the same guarantees except idempotence (a retried batch may be duplicated; the
pipeline deduplicates by event_id).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from tqdm import tqdm

from cxsignals.simulator.bulk import publish_bulk
from cxsignals.simulator.delivery import MAX_REQUEST_BYTES, BrokerUnavailable, PublishStats
from cxsignals.simulator.journeys import SimMessage
from streams.kafka_security import PLAINTEXT, KafkaSecurity

PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 20,  # a request per ~20 ms at any rate this paced producer sends
    "batch_size": 256 * 1024,
    "max_request_size": MAX_REQUEST_BYTES,
    "max_block_ms": 15_000,  # how long send() may wait for metadata of an unknown topic
    "retry_backoff_ms": 200,
}


class TokenBucket:
    """Blocks callers so that on average at most ``rate_per_s`` tokens are taken per second.

    Up to ``burst`` tokens may be taken at once after an idle period. ``clock`` and ``sleep``
    are injectable for tests.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        # A tenth of a second worth of tokens smooths timer jitter without visible bursts.
        self.burst = burst if burst is not None else max(1.0, rate_per_s / 10.0)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens < 1.0:
            self._sleep((1.0 - self._tokens) / self.rate_per_s)
            now = self._clock()
            self._tokens += (now - self._last) * self.rate_per_s
            self._last = now
        self._tokens -= 1.0


def make_producer(bootstrap_servers: str, connect_timeout_s: float = 10.0,
                  security: KafkaSecurity = PLAINTEXT) -> KafkaProducer:
    """A producer connected to the cluster; raises BrokerUnavailable within the timeout."""
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","),
            bootstrap_timeout_ms=int(connect_timeout_s * 1000),
            **PRODUCER_CONFIG,
            **security.kafka_python_options(),
        )
    except KafkaError as exc:
        from streams.faust_internals import connection_problem_now

        problem = connection_problem_now(bootstrap_servers, security)
        if problem is not None:
            raise BrokerUnavailable(f"cannot use Kafka at {bootstrap_servers}: {problem}") from None
        raise BrokerUnavailable(
            f"cannot reach Kafka at {bootstrap_servers} within {connect_timeout_s:.0f} s "
            f"({type(exc).__name__}: {exc}); is the broker running (`make services`)?"
        ) from exc


def publish(
    messages: Iterable[SimMessage],
    *,
    bootstrap_servers: str,
    topic: str,
    rate_per_s: float | None,
    progress: bool,
    total: int | None = None,
    connect_timeout_s: float = 10.0,
    flush_timeout_s: float = 120.0,
    security: KafkaSecurity = PLAINTEXT,
) -> PublishStats:
    """Send ``messages`` to ``topic``; return what was delivered.

    ``rate_per_s`` None or 0 = as fast as possible (delegated to :func:`publish_bulk`);
    otherwise a token bucket paces a kafka-python producer. ``total`` only sizes the progress
    bar. Ctrl-C stops consuming ``messages``, flushes what was sent and returns with
    ``interrupted=True``. Raises BrokerUnavailable when no broker answers within
    ``connect_timeout_s`` or the topic's metadata cannot be fetched.
    """
    if not rate_per_s:
        return publish_bulk(
            messages,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            progress=progress,
            total=total,
            connect_timeout_s=connect_timeout_s,
            security=security,
        )
    stats = PublishStats()
    producer = make_producer(bootstrap_servers, connect_timeout_s, security)
    take = TokenBucket(rate_per_s).take
    bar = tqdm(
        total=total, unit=" ev", unit_scale=True, disable=not progress, mininterval=0.5,
        desc=f"-> {topic}", dynamic_ncols=True,
    )  # fmt: skip
    on_error = stats.record_error
    send = producer.send
    started = time.perf_counter()
    try:
        try:
            for message in messages:
                take()
                send(topic, value=message.value, key=message.key).add_errback(on_error)
                stats.attempted += 1
                stats.value_bytes += len(message.value)
                if message.is_bad:
                    stats.bad += 1
                bar.update(1)
        except KeyboardInterrupt:
            stats.interrupted = True
        except KafkaTimeoutError as exc:
            raise BrokerUnavailable(
                f"no metadata for topic {topic!r} on {bootstrap_servers} ({exc}); create it with "
                "`cxsignals topics create` or enable auto-creation"
            ) from exc
        try:
            producer.flush(timeout=flush_timeout_s)
        except KafkaTimeoutError as exc:
            stats.first_error = stats.first_error or f"flush timed out: {exc}"
        except KeyboardInterrupt:  # a second Ctrl-C: give up waiting, still report
            stats.interrupted = True
    finally:
        stats.elapsed_s = time.perf_counter() - started
        bar.set_postfix(bad=stats.bad, failed=stats.failed, refresh=False)
        bar.close()
        producer.close(timeout=5)
    return stats
