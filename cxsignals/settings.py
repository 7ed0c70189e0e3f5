"""The one settings object of CX Signals, read once from environment variables.

Conventional names are used where they exist (``KAFKA_BOOTSTRAP_SERVERS``, ``CLICKHOUSE_URL``);
everything else carries the ``CX_`` prefix, e.g. ``CX_METRICS_PORT=9464``. Units are part of
every name (``_s``, ``_ms``, ``_days``). The object is frozen: build it once with
:func:`get_settings` and pass it down.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.limits import MAX_EVENT_BYTES
from schemas.topics import TopicNames
from sinks.config import ClickHouseParams, SinkConfig
from streams.config import (
    CHECKPOINT_EVENTS,
    CHECKPOINT_INTERVAL_MS,
    FETCH_MAX_WAIT_MS,
    FETCH_MIN_BYTES,
    STALL_DUMP_S,
    WorkerConfig,
)
from streams.kafka_security import KafkaSecurity, KafkaSecurityError

__all__ = ["REPO_ROOT", "ClickHouseParams", "KafkaSecurity", "Settings", "SettingsError",
           "checked_settings", "get_settings", "namespaced_env"]

_DEFAULT_TOPICS = TopicNames()
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CX_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "CX_KAFKA_BOOTSTRAP_SERVERS"),
    )
    clickhouse_url: SecretStr = Field(
        SecretStr("clickhouse://default:@127.0.0.1:9000/cx"),
        validation_alias=AliasChoices("CLICKHOUSE_URL", "CX_CLICKHOUSE_URL"),
    )

    # Kafka security (docs/security.md): conventional names without the CX_ prefix, read by
    # every Kafka client of the project through Settings.kafka_security.
    kafka_security_protocol: str = Field(
        "PLAINTEXT", validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL"))
    kafka_sasl_mechanism: str = Field(
        "SCRAM-SHA-512", validation_alias=AliasChoices("KAFKA_SASL_MECHANISM"))
    kafka_sasl_username: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SASL_PASSWORD"))
    kafka_sasl_password_file: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SASL_PASSWORD_FILE"))
    kafka_ssl_cafile: str | None = Field(None, validation_alias=AliasChoices("KAFKA_SSL_CAFILE"))
    kafka_ssl_certfile: str | None = Field(
        None, validation_alias=AliasChoices("KAFKA_SSL_CERTFILE"))
    kafka_ssl_keyfile: str | None = Field(None, validation_alias=AliasChoices("KAFKA_SSL_KEYFILE"))

    # Topics and their partition counts (created by `cxsignals topics create`).
    topic_touchpoints: str = _DEFAULT_TOPICS.touchpoints
    topic_dlq: str = _DEFAULT_TOPICS.dead_letters
    topic_alerts_marketing: str = _DEFAULT_TOPICS.alerts_marketing
    topic_alerts_support: str = _DEFAULT_TOPICS.alerts_support
    topic_scores: str = _DEFAULT_TOPICS.scores
    topic_sink_dlq: str = _DEFAULT_TOPICS.sink_dead_letters
    topic_alerts_control: str = _DEFAULT_TOPICS.alerts_control
    touchpoint_partitions: int = Field(4, ge=1)
    alert_partitions: int = Field(2, ge=1)
    replication_factor: int = Field(1, ge=1)

    # Faust worker.
    app_id: str = "cx-signals"
    store_url: str = "rocksdb://"
    state_dir: Path = REPO_ROOT / ".state" / "worker"
    metrics_port: int = Field(9464, ge=0, le=65535)
    # /metrics of `cxsignals sink` (0 turns it off).
    sink_metrics_port: int = Field(9466, ge=0, le=65535)
    log_level: str = "info"
    # Scoring batches: one fetch of at most batch_max_events messages is scored in one pass,
    # its outputs handed to Kafka every 2,000 messages. Live traffic fetches far fewer; a
    # backlog fills it (fewer fetches and checkpoint slices: 6000 drains ~20 % faster than
    # 2000, docs/performance.md).
    batch_max_events: int = Field(6000, ge=1)
    # Checkpoints: states written once per customer, offsets acked (after the outputs). Each
    # changed state is written whole (encode, RocksDB, changelog) once per checkpoint, so a
    # longer interval writes a customer who sends several events once instead of each
    # second: 3 s (Faust's commit interval is 2.8 s) left the worker 5-19 % more events per CPU
    # second in alternating latency phases than 1 s (docs/performance.md). The cost: identity
    # links reach other workers, and `cxsignals state show` and a restarted worker see
    # states, up to this much later.
    checkpoint_interval_ms: int = Field(CHECKPOINT_INTERVAL_MS, ge=1)
    # ... or after this many events, if that comes first: a worker under a steady load of
    # more than this many events per interval checkpoints by the count.
    checkpoint_events: int = Field(CHECKPOINT_EVENTS, ge=1)
    # A worker that stops answering (kill -9, lost host) loses its partitions after this long.
    session_timeout_s: float = Field(10.0, ge=6, le=300)
    # Producer batching: how long a record may wait for others bound to the same partition.
    producer_linger_ms: int = Field(5, ge=0)
    # Fetch coalescing: the broker answers once it has this many bytes or after this long
    # (streams/config.py says why 1 MiB / 80 ms).
    fetch_min_bytes: int = Field(FETCH_MIN_BYTES, ge=1)
    fetch_max_wait_ms: int = Field(FETCH_MAX_WAIT_MS, ge=0, le=5000)
    producer_batch_bytes: int = Field(512 * 1024, ge=1024)

    # Event contract.
    max_event_bytes: int = Field(MAX_EVENT_BYTES, ge=1)
    # Events stamped further ahead of receipt are dead-lettered as future_timestamp.
    max_future_skew_s: float = Field(300.0, ge=0)
    # Worker and sink: an event loop blocked this long has every thread's stack written to
    # stderr, to tell what blocked it (streams/loop_lag.py; 0 turns it off).
    stall_dump_s: float = Field(STALL_DUMP_S, ge=0)

    # Scoring and alerting.
    rules_path: Path | None = None
    grace_s: float = Field(3600, ge=0)
    half_life_days: float = Field(14.0, gt=0)
    score_publish_step: float = Field(2.0, ge=0)
    tick_interval_s: float = Field(5.0, gt=0)
    # Decoded customer states kept in memory per worker (0 disables the cache).
    state_cache_customers: int = Field(10_000, ge=0)
    # RocksDB memory per table partition the worker opens (docs/operations.md, "Worker memory"):
    # two memtables of this size, and a block cache of this size.
    rocksdb_write_buffer_mb: int = Field(8, ge=1, le=1024)
    rocksdb_block_cache_mb: int = Field(16, ge=1, le=8192)
    # A customer inactive this long is deleted from the worker's state (0 keeps states for ever).
    state_ttl_days: float = Field(400.0, ge=0)
    # Re-evaluate idle customers' churn risk as time passes (CX_IDLE_RISK=false turns it off).
    idle_risk: bool = True
    # The worker's Python objects on transparent huge pages where the kernel allows it
    # (streams/huge_pages.py; CX_HUGE_PAGES=false turns it off).
    huge_pages: bool = True

    # ClickHouse sink.
    sink_batch_rows: int = Field(50_000, ge=1)
    sink_batch_ms: int = Field(250, ge=1)
    # The sink's fetches: the broker answers once it holds this many bytes or after this long.
    sink_fetch_min_bytes: int = Field(256 * 1024, ge=1)
    sink_fetch_max_wait_ms: int = Field(100, ge=0, le=5000)
    # Longest wait between two attempts to reach ClickHouse (or Kafka) while it is away: also the
    # longest delay before the sink notices that it is back.
    sink_retry_max_s: float = Field(5.0, gt=0)

    # Data protection (docs/data-protection.md). Kept for ever when unset: topics then get the
    # broker's default retention (7 days on a stock broker), ClickHouse keeps every row.
    retention_days: int | None = Field(None, ge=1)
    # With a key, the erase audit stores an HMAC-SHA256 of each erased id (else nothing of it).
    erase_audit_key: SecretStr | None = None

    @property
    def kafka_security(self) -> KafkaSecurity:
        """How every Kafka client connects; raises ValueError naming the wrong setting."""
        # An empty variable (e.g. `KAFKA_SASL_PASSWORD=` in an env file) counts as unset.
        password = self.kafka_sasl_password or None
        if self.kafka_sasl_password_file:
            if password is not None:
                raise KafkaSecurityError(
                    "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both")
            try:
                text = Path(self.kafka_sasl_password_file).read_text().strip()
            except OSError as exc:
                raise KafkaSecurityError(
                    f"KAFKA_SASL_PASSWORD_FILE={self.kafka_sasl_password_file} cannot be read: "
                    f"{exc.strerror}") from None
            password = SecretStr(text)
        return KafkaSecurity(
            protocol=self.kafka_security_protocol.upper(),
            sasl_mechanism=self.kafka_sasl_mechanism.upper(),
            sasl_username=self.kafka_sasl_username or None,
            sasl_password=password.get_secret_value() if password is not None else None,
            ssl_cafile=self.kafka_ssl_cafile or None, ssl_certfile=self.kafka_ssl_certfile or None,
            ssl_keyfile=self.kafka_ssl_keyfile or None,
        )
    # Churn model: churn_risk = P(no purchase within the horizon); the params file is written by
    # `cxsignals churn fit` (unset: the published parameters, docs/scoring.md).
    churn_horizon_days: float = Field(90.0, gt=0)
    churn_params_path: Path | None = None

    @property
    def clickhouse(self) -> ClickHouseParams:
        return ClickHouseParams.from_url(self.clickhouse_url.get_secret_value())

    @property
    def topics(self) -> TopicNames:
        return TopicNames(
            touchpoints=self.topic_touchpoints, dead_letters=self.topic_dlq,
            alerts_marketing=self.topic_alerts_marketing,
            alerts_support=self.topic_alerts_support, scores=self.topic_scores,
            sink_dead_letters=self.topic_sink_dlq,
            alerts_control=self.topic_alerts_control,
        )

    def worker_config(self) -> WorkerConfig:
        """What ``cxsignals worker`` hands to :func:`streams.app.create_worker`."""
        return WorkerConfig(
            app_id=self.app_id, kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            topics=self.topics, touchpoint_partitions=self.touchpoint_partitions,
            replication_factor=self.replication_factor, store_url=self.store_url,
            state_dir=self.state_dir, batch_max_events=self.batch_max_events,
            checkpoint_interval_ms=self.checkpoint_interval_ms,
            checkpoint_events=self.checkpoint_events,
            producer_linger_ms=self.producer_linger_ms,
            fetch_min_bytes=self.fetch_min_bytes, fetch_max_wait_ms=self.fetch_max_wait_ms,
            producer_batch_bytes=self.producer_batch_bytes, max_event_bytes=self.max_event_bytes,
            max_future_skew_s=self.max_future_skew_s, rules_path=self.rules_path,
            grace_s=self.grace_s, half_life_days=self.half_life_days,
            score_publish_step=self.score_publish_step, tick_interval_s=self.tick_interval_s,
            state_cache_customers=self.state_cache_customers,
            rocksdb_write_buffer_mb=self.rocksdb_write_buffer_mb,
            rocksdb_block_cache_mb=self.rocksdb_block_cache_mb,
            state_ttl_days=self.state_ttl_days, session_timeout_s=self.session_timeout_s,
            kafka_security=self.kafka_security,
            idle_risk=self.idle_risk,
            churn_horizon_days=self.churn_horizon_days, churn_params_path=self.churn_params_path,
            stall_dump_s=self.stall_dump_s,
        )

    def sink_config(self) -> SinkConfig:
        """What ``cxsignals sink`` hands to :func:`sinks.consumer.build_sink`."""
        return SinkConfig(
            app_id=self.app_id, kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            topics=self.topics, clickhouse=self.clickhouse, batch_rows=self.sink_batch_rows,
            batch_ms=self.sink_batch_ms, retry_max_s=self.sink_retry_max_s,
            fetch_min_bytes=self.sink_fetch_min_bytes,
            fetch_max_wait_ms=self.sink_fetch_max_wait_ms,
            max_event_bytes=self.max_event_bytes, max_future_skew_s=self.max_future_skew_s,
            kafka_security=self.kafka_security, stall_dump_s=self.stall_dump_s,
        )


def namespaced_env(
    prefix: str, *, kafka_bootstrap: str, clickhouse_url: str, database: str, state_dir: Path
) -> dict[str, str]:
    """Env vars for a pipeline that shares the services with others but none of their names:
    its own topics, consumer groups (app id), ClickHouse database and state dir. Used by the
    integration tests and the benchmark to run side by side with `make run`."""
    server = clickhouse_url.rsplit("/", 1)[0]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CLICKHOUSE_URL": f"{server}/{database}",
        "CX_APP_ID": prefix,
        "CX_TOPIC_TOUCHPOINTS": f"{prefix}.touchpoints",
        "CX_TOPIC_DLQ": f"{prefix}.touchpoints.dlq",
        "CX_TOPIC_ALERTS_MARKETING": f"{prefix}.alerts.marketing",
        "CX_TOPIC_ALERTS_SUPPORT": f"{prefix}.alerts.support",
        "CX_TOPIC_SCORES": f"{prefix}.scores",
        "CX_TOPIC_SINK_DLQ": f"{prefix}.sink.dlq",
        "CX_TOPIC_ALERTS_CONTROL": f"{prefix}.alerts.control",
        "CX_STATE_DIR": str(state_dir),
    }


class SettingsError(ValueError):
    """Settings that cannot work; the message names the settings and never holds a value that
    may be secret (pydantic's own message would echo every input, passwords included)."""


def checked_settings() -> Settings:
    """:func:`get_settings`, with the Kafka security and ClickHouse URL checked now, so that a
    wrong setting stops the process before any client connects. Raises :class:`SettingsError`."""
    try:
        settings = get_settings()
        settings.kafka_security  # noqa: B018
        settings.clickhouse  # noqa: B018
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']).upper() or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False))
        raise SettingsError(f"invalid settings: {problems}") from None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return Settings()
