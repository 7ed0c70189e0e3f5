"""The worker's factory: one Faust app with its topics, tables, scoring pipeline and timers.

Importing this module builds nothing; :func:`create_worker` builds everything from a
:class:`~streams.config.WorkerConfig`. Faust is given ``env={}`` so that its own environment
names (``BROKER_URL``, ``WEB_PORT``, ...) cannot silently override the config.

Topics and tables:

* ``<touchpoints>`` (input) and ``<app id>.touchpoints.keyed`` (internal, same partition count):
  consumed in whole fetches by :class:`~streams.pipeline.ScoringPipeline`, never by a Faust
  stream;
* ``customer-state`` (RocksDB + changelog, co-partitioned with both): one state per customer,
  stored in the partition :func:`~streams.partitioner.customer_partition` gives the customer;
* ``identities`` (a GlobalTable: every worker holds all of it): anonymous id -> customer id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from schemas.limits import MAX_MESSAGE_BYTES
from streams import metrics
from streams.config import WorkerConfig
from streams.core.churn_model import load_churn_model
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState
from streams.deadlines import DeadlineIndex
from streams.expiry import DAY_S, ExpiryIndex, last_active_s
from streams.faust_internals import (
    BatchApp,
    BatchSender,
    TablePartitions,
    batch_consumer,
    check_versions,
    guard_changelog_queue,
    probe_broker,
    subscribe,
)
from streams.health import Health
from streams.loop_lag import watch_loop_lag
from streams.pipeline import PipelineLimits, ScoringPipeline
from streams.processing import Processor

log = logging.getLogger(__name__)

STATE_TABLE = "customer-state"
IDENTITY_TABLE = "identities"
REBUILD_CHUNK = 500
KAFKA_PROBE_S = 5.0
IDLE_RISK_MAX_HORIZON_DAYS = 400.0


def build_engine(config: WorkerConfig) -> Engine:
    return Engine(
        EngineConfig(grace_s=config.grace_s, half_life_days=config.half_life_days,
                     score_publish_step=config.score_publish_step,
                     idle_risk_horizon_days=idle_risk_horizon_days(config),
                     churn_model=load_churn_model(config.churn_params_path),
                     churn_horizon_days=config.churn_horizon_days),
        load_rules(config.rules_path), VaderAnalyzer(),
    )


def idle_risk_horizon_days(config: WorkerConfig) -> float:
    """How far ahead an idle customer's next risk crossing is looked for: the state TTL (a
    customer idle that long is deleted anyway), 400 days when states are kept for ever, 0
    (off) when ``idle_risk`` is off."""
    if not config.idle_risk:
        return 0.0
    return config.state_ttl_days if config.state_ttl_days > 0 else IDLE_RISK_MAX_HORIZON_DAYS


@dataclass
class Worker:
    """What :func:`create_worker` built (the app runs it; tests and tools inspect it)."""

    app: faust.App
    pipeline: ScoringPipeline


def _faust_app(config: WorkerConfig) -> faust.App:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return BatchApp(
        config.app_id,
        env={},
        broker=config.kafka_broker_url,
        # SASL/TLS for every aiokafka client Faust makes (consumer, producer, topic creation).
        broker_credentials=config.kafka_security.faust_credentials(),
        store=config.store_url,
        datadir=str(config.state_dir),
        autodiscover=False,
        # Our /metrics endpoint is prometheus-client's; Faust's web server stays off so that
        # several workers on one host need no port juggling.
        web_enabled=False,
        topic_partitions=config.touchpoint_partitions,
        topic_replication_factor=config.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,
        producer_acks=-1,
        producer_linger=config.producer_linger_ms / 1000,
        producer_max_batch_size=config.producer_batch_bytes,
        broker_max_poll_records=config.batch_max_events,
        broker_commit_interval=1.0,
        # A worker that died without leaving the group (kill -9, lost host) holds its
        # partitions until the session times out: Faust's default is 60 s.
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=min(3.0, config.session_timeout_s / 3),
        table_cleanup_interval=300.0,
        logging_config=None,
    )


def create_worker(config: WorkerConfig, health: Health | None = None) -> Worker:
    """Build the worker's Faust app, topics, tables, pipeline and timers. ``health`` (served
    as /healthz by the CLI) gets the ``kafka`` problem while the broker does not answer, and
    loses ``starting`` once partitions are assigned and the tables recovered."""
    check_versions()
    app = _faust_app(config)
    partitions = config.touchpoint_partitions
    touchpoints = app.topic(config.topics.touchpoints, key_type=bytes, value_type=bytes)
    keyed = app.topic(config.keyed_topic, key_type=bytes, value_type=bytes,
                      partitions=partitions, internal=True)
    state_table = app.Table(STATE_TABLE, default=None, key_type=bytes, value_type=bytes,
                            partitions=partitions, options=config.rocksdb_options())
    # A link another worker learnt must be usable at once: Faust stores a table's changelog
    # records in batches of ``recovery_buffer_size`` (1,000 by default), so a global table's
    # updates from other workers stayed invisible until 1,000 had arrived. Links are few: one
    # write each is cheap.
    identity_table = app.GlobalTable(IDENTITY_TABLE, default=None, key_type=bytes,
                                     value_type=bytes, partitions=partitions,
                                     options=config.rocksdb_options(),
                                     recovery_buffer_size=1)
    states = TablePartitions(state_table)
    identities = TablePartitions(identity_table)
    deadlines = DeadlineIndex()
    expiry = ExpiryIndex(config.state_ttl_days * DAY_S)
    processor = Processor(build_engine(config), states.get, config.topics, deadlines=deadlines,
                          expiry=expiry, max_cached_states=config.state_cache_customers)

    consumer = batch_consumer(app)
    pipeline = ScoringPipeline(
        processor, states, identities, BatchSender.of_app(app).send, consumer.ack_range,
        config.topics, config.keyed_topic,
        PipelineLimits(partitions=partitions, max_event_bytes=config.max_event_bytes,
                       max_future_skew_s=config.max_future_skew_s,
                       checkpoint_s=config.checkpoint_interval_ms / 1000,
                       checkpoint_events=config.checkpoint_events),
        send_states=BatchSender.of_app(app, states=True).send,
    )
    subscribe(app, touchpoints)
    subscribe(app, keyed)
    consumer.batch_topics = frozenset({config.topics.touchpoints, config.keyed_topic})
    guard_changelog_queue(app, consumer.changelog_holes)
    consumer.batch_handler = pipeline.handle
    consumer.batch_drain = pipeline.drain
    consumer.fetch_timeout_s = min(config.checkpoint_interval_ms / 1000,
                                   config.tick_interval_s)
    consumer.fetch_min_bytes = config.fetch_min_bytes
    consumer.fetch_max_wait_ms = config.fetch_max_wait_ms
    _wire_health(app, config, pipeline, states, deadlines, expiry, health or Health())
    return Worker(app=app, pipeline=pipeline)


def _wire_health(app: faust.App, config: WorkerConfig, pipeline: ScoringPipeline,
                 states: TablePartitions, deadlines: DeadlineIndex, expiry: ExpiryIndex,
                 health: Health) -> None:
    """Rebalance handling, deadline and expiry index rebuilds and the health metrics."""
    processor = pipeline.processor
    source_topics = {config.topics.touchpoints, config.keyed_topic}
    owned: set[int] = set()
    ready: set[int] = set()
    rebuilds: dict[int, asyncio.Task[None]] = {}

    pipeline.tick_partitions = lambda: sorted(ready)

    async def rebuild(partition: int) -> None:
        """Put the stored customers' deadlines and stale days of a newly owned partition into
        the indexes, a chunk per event-loop turn (no stall); ticks for it start once it is
        complete."""
        count = 0
        for chunk in states.scan(partition, REBUILD_CHUNK):
            now_s = time.time()
            for key, raw in chunk:
                if raw:
                    state = CustomerState.from_bytes(raw)
                    customer_id = key.decode()
                    deadlines.add_if_absent(partition, customer_id,
                                            processor.stored_wakeup_s(state, now_s))
                    expiry.add(partition, customer_id, last_active_s(state))
            count += len(chunk)
            await asyncio.sleep(0)
            if partition not in owned:
                return
        ready.add(partition)
        log.info("deadline and expiry indexes of partition %d rebuilt from %d stored states",
                 partition, count)

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        assigned: set[Any] = set(args[0]) if args else set(kwargs.get("assigned", ()))
        metrics.rebalances.inc()
        now_owned = {tp.partition for tp in assigned if tp.topic in source_topics}
        for partition in owned - now_owned:
            deadlines.drop_partition(partition)
            expiry.drop_partition(partition)
            ready.discard(partition)
            task = rebuilds.pop(partition, None)
            if task is not None:
                task.cancel()
        owned.clear()
        owned.update(now_owned)
        processor.forget_states()

    @app.on_rebalance_complete.connect
    async def _on_recovered(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """Tables recovered: rebuild the index of the partitions that are new to us."""
        health.clear("starting")
        for partition in sorted(owned - ready):
            if partition not in rebuilds or rebuilds[partition].done():
                rebuilds[partition] = asyncio.ensure_future(rebuild(partition))

    @app.task
    async def _up() -> None:
        metrics.worker_up.set(1)

    @app.task
    async def _loop_lag() -> None:
        await watch_loop_lag(stall_dump_s=config.stall_dump_s)

    @app.timer(interval=KAFKA_PROBE_S, name="kafka-health")
    async def _kafka_health() -> None:
        """/healthz names the broker while it does not answer (aiokafka reconnects by
        itself, backed off; the pipeline retries its deliveries meanwhile)."""
        reason = await probe_broker(config.kafka_bootstrap_servers, timeout_s=KAFKA_PROBE_S / 2,
                                    security=config.kafka_security)
        if reason is None:
            if "kafka" in health.problems():
                log.info("Kafka answers again")
            health.clear("kafka")
        else:
            if "kafka" not in health.problems():
                log.warning("Kafka at %s does not answer: %s", config.kafka_bootstrap_servers,
                            reason)
            health.problem("kafka", reason)

    @app.timer(interval=5.0, name="consumer-lag")
    async def _consumer_lag() -> None:
        """High-water mark minus this worker's position, per assigned source partition."""
        consumer = app.consumer
        metrics.consumer_lag.clear()
        for tp in consumer.assignment():
            if tp.topic not in source_topics:
                continue
            try:
                position = await consumer.position(tp)
                highwater = consumer.highwater(tp)
            except Exception:  # a partition revoked mid-loop: measured next time
                continue
            if position is not None and highwater is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - position))

    @app.timer(interval=10.0, name="state-size")
    async def _state_size() -> None:
        """Customers on this worker's partitions, counted incrementally by the expiry index
        (RocksDB's key estimate until the partitions' indexes are rebuilt)."""
        if owned <= ready:
            metrics.customers_in_state.set(len(expiry))
        else:
            metrics.customers_in_state.set(states.estimated_keys(sorted(owned)))
