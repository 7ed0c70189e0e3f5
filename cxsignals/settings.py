"""The one settings object of CX Signals, read once from environment variables.

Conventional names are used where they exist (``KAFKA_BOOTSTRAP_SERVERS``, ``CLICKHOUSE_URL``);
everything else carries the ``CX_`` prefix, e.g. ``CX_METRICS_PORT=9464``. Units are part of
every name (``_s``, ``_ms``, ``_days``). The object is frozen: build it once with
:func:`get_settings` and pass it down.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class ClickHouseParams:
    """Connection parameters parsed from ``CLICKHOUSE_URL`` (clickhouse://user:pw@host:port/db)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("clickhouse", "tcp"):
            raise ValueError(
                "CLICKHOUSE_URL must look like clickhouse://user:password@host:9000/db, "
                f"got {url!r}"
            )
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 9000
        self.user = unquote(parsed.username or "default")
        self.password = unquote(parsed.password or "")
        self.database = (parsed.path or "/").lstrip("/") or "cx"


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

    # Topics and their partition counts (created by `cxsignals topics create`).
    topic_touchpoints: str = "cx.touchpoints"
    topic_dlq: str = "cx.touchpoints.dlq"
    topic_alerts_marketing: str = "cx.alerts.marketing"
    topic_alerts_support: str = "cx.alerts.support"
    topic_scores: str = "cx.scores"
    touchpoint_partitions: int = Field(4, ge=1)
    alert_partitions: int = Field(2, ge=1)
    replication_factor: int = Field(1, ge=1)

    # Faust worker.
    app_id: str = "cx-signals"
    store_url: str = "rocksdb://"
    state_dir: Path = REPO_ROOT / ".state" / "worker"
    metrics_port: int = Field(9464, ge=0, le=65535)
    log_level: str = "info"
    # Scoring batches: states are written to the table, outputs handed to Kafka and the batch's
    # messages acked once per batch. A batch ends when it holds batch_max_events, when the
    # agent's input queue runs dry, or after batch_max_ms.
    batch_max_events: int = Field(1000, ge=1)
    batch_max_ms: int = Field(20, ge=1)
    # Messages Faust buffers per topic between its consumer and the agent.
    stream_buffer_events: int = Field(16_384, ge=100)
    # Producer batching: how long a record may wait for others bound to the same partition.
    producer_linger_ms: int = Field(5, ge=0)
    producer_batch_bytes: int = Field(512 * 1024, ge=1024)

    # Event contract.
    max_event_bytes: int = Field(1024 * 1024, ge=1)
    max_future_skew_s: float = Field(24 * 3600, ge=0)

    # Scoring and alerting.
    rules_path: Path | None = None
    grace_s: float = Field(3600, ge=0)
    half_life_days: float = Field(14.0, gt=0)
    score_publish_step: float = Field(2.0, ge=0)
    tick_interval_s: float = Field(5.0, gt=0)
    # Decoded customer states kept in memory per worker (0 disables the cache).
    state_cache_customers: int = Field(50_000, ge=0)

    # ClickHouse sink.
    sink_batch_rows: int = Field(50_000, ge=1)
    sink_batch_ms: int = Field(1000, ge=1)
    sink_retry_max_s: float = Field(30.0, gt=0)

    @property
    def clickhouse(self) -> ClickHouseParams:
        return ClickHouseParams(self.clickhouse_url.get_secret_value())

    @property
    def kafka_broker_url(self) -> str:
        """Faust's broker URL form: ``kafka://h1:9092;kafka://h2:9092``."""
        return ";".join(
            f"kafka://{host.strip()}" for host in self.kafka_bootstrap_servers.split(",") if host
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
        "CX_STATE_DIR": str(state_dir),
    }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return Settings()
