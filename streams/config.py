"""What the worker needs to know, handed down by the CLI (which reads the environment once).

Nothing in ``streams`` reads environment variables: ``cxsignals worker`` builds a
:class:`WorkerConfig` from its settings and passes it to :func:`streams.app.create_worker`;
tests and the benchmark build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from schemas.limits import MAX_EVENT_BYTES
from schemas.topics import TopicNames
from streams.kafka_security import KafkaSecurity

# Worker and sink: an event loop blocked this long has every thread's stack written to stderr
# (the one default of CX_STALL_DUMP_S, WorkerConfig and SinkConfig; streams/loop_lag.py).
STALL_DUMP_S = 2.0
# Memtables per RocksDB table partition: one being filled while the other is flushed.
ROCKSDB_MEMTABLES = 2
# How far apart checkpoints (states written, offsets acked) are by default: the one default of
# CX_CHECKPOINT_INTERVAL_MS, WorkerConfig and PipelineLimits (cxsignals/settings.py says why 3 s).
CHECKPOINT_INTERVAL_MS = 3000
# ... or after this many events, if that comes first (the one default of CX_CHECKPOINT_EVENTS,
# WorkerConfig and PipelineLimits). Until 2026-12-07 a fixed 50,000: at 24,000 events/s a
# checkpoint every 2.1 s whatever the interval, so the interval's tests above 2 s at that load
# compared equal checkpoints.
CHECKPOINT_EVENTS = 50_000
# How the worker's live fetches coalesce, by default (the one default of CX_FETCH_MIN_BYTES /
# CX_FETCH_MAX_WAIT_MS and WorkerConfig): the broker answers once it holds this many bytes or
# after this long. Each fetch has a fixed cost (the cross-thread getmany, the producer requests,
# the durable phase), so fewer, larger fetches leave more of the worker's core to scoring, at up
# to this much added latency. 1 MiB / 80 ms against 256 KiB / 30 ms (docs/performance.md,
# 2026-12-07, latency-only phases at 15,000 / 24,000 events/s): +27 % live events per worker
# CPU second at half load, +7 % at 80 %; the 80 % alert p99 223-358 ms in five runs of six
# (1,062 in the sixth) against 339-799 ms in three; the half-load alert p50 ~100 ms against ~45.
FETCH_MIN_BYTES = 1024 * 1024
FETCH_MAX_WAIT_MS = 80


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    app_id: str = "cx-signals"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = field(default_factory=TopicNames)
    touchpoint_partitions: int = 4
    replication_factor: int = 1
    store_url: str = "rocksdb://"
    state_dir: Path = Path(".state/worker")
    # A scoring batch is one fetch of at most this many messages, scored in one pass; its
    # outputs are handed over every 2,000 messages (PipelineLimits.yield_every_records).
    batch_max_events: int = 6000
    # States are written (once per customer) and offsets acked at checkpoints this far apart
    # (cxsignals/settings.py says why 3 s).
    checkpoint_interval_ms: int = CHECKPOINT_INTERVAL_MS
    # ... or after this many events, whichever comes first.
    checkpoint_events: int = CHECKPOINT_EVENTS
    producer_linger_ms: int = 5
    # A fetch waits for this many bytes, at most this long (see FETCH_MIN_BYTES above).
    fetch_min_bytes: int = FETCH_MIN_BYTES
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    producer_batch_bytes: int = 512 * 1024
    max_event_bytes: int = MAX_EVENT_BYTES
    max_future_skew_s: float = 300.0
    # An event loop blocked this long has every thread's stack written to stderr (0: off).
    stall_dump_s: float = STALL_DUMP_S
    rules_path: Path | None = None
    grace_s: float = 3600.0
    half_life_days: float = 14.0
    score_publish_step: float = 2.0
    # How often idle customers' deadlines (cart recovery, deferred alerts) are checked.
    tick_interval_s: float = 5.0
    state_cache_customers: int = 10_000
    # RocksDB memory per open table partition (Faust's defaults are 3 x 64 MiB memtables and a
    # 2 GiB block cache per partition: a live worker's RSS grew ~9 MB/s with them).
    rocksdb_write_buffer_mb: int = 8
    rocksdb_block_cache_mb: int = 16
    # How long the group waits for a silent worker before moving its partitions.
    session_timeout_s: float = 10.0
    # Customers inactive this long are deleted (0: kept for ever).
    state_ttl_days: float = 400.0
    # SASL/TLS of every Kafka client the worker makes (docs/security.md).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # Re-evaluate idle customers' churn risk as time passes (docs/scoring.md, "Time-aware
    # risk"): win_back and high_value_at_risk fire for customers who go quiet.
    idle_risk: bool = True
    # Churn risk horizon and the params file of `cxsignals churn fit` (None: published).
    churn_horizon_days: float = 90.0
    churn_params_path: Path | None = None

    def rocksdb_options(self) -> dict[str, int]:
        """Faust's RocksDB table options (a new dict each call: Faust pops keys from it)."""
        return {
            "write_buffer_size": self.rocksdb_write_buffer_mb * 2**20,
            "max_write_buffer_number": ROCKSDB_MEMTABLES,
            "block_cache_size": self.rocksdb_block_cache_mb * 2**20,
        }

    @property
    def keyed_topic(self) -> str:
        return self.topics.keyed(self.app_id)

    @property
    def kafka_broker_url(self) -> str:
        """Faust's broker URL form: ``kafka://h1:9092;kafka://h2:9092``."""
        return ";".join(
            f"kafka://{host.strip()}" for host in self.kafka_bootstrap_servers.split(",") if host
        )
