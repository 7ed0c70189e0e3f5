"""What the sink needs to know, handed down by the CLI (which reads the environment once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from schemas.limits import MAX_EVENT_BYTES
from schemas.topics import TopicNames


@dataclass(frozen=True, slots=True)
class ClickHouseParams:
    """Connection parameters parsed from ``CLICKHOUSE_URL`` (clickhouse://user:pw@host:port/db).

    ``repr`` never shows the password."""

    host: str = "127.0.0.1"
    port: int = 9000
    user: str = "default"
    password: str = field(default="", repr=False)
    database: str = "cx"

    @classmethod
    def from_url(cls, url: str) -> ClickHouseParams:
        try:
            parsed = urlparse(url)
            port = parsed.port
        except ValueError:
            parsed, port = None, None
        if parsed is None or parsed.scheme not in ("clickhouse", "tcp"):
            # Never echo the URL: it may carry a password.
            raise ValueError(
                "CLICKHOUSE_URL must look like clickhouse://user:password@host:9000/db"
            )
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=port or 9000,
            user=unquote(parsed.username or "default"),
            password=unquote(parsed.password or ""),
            database=(parsed.path or "/").lstrip("/") or "cx",
        )


@dataclass(frozen=True, slots=True)
class SinkConfig:
    app_id: str = "cx-signals"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = field(default_factory=TopicNames)
    clickhouse: ClickHouseParams = field(default_factory=ClickHouseParams)
    batch_rows: int = 50_000
    batch_ms: int = 250
    retry_max_s: float = 5.0
    max_event_bytes: int = MAX_EVENT_BYTES
    max_future_skew_s: float = 300.0

    @property
    def group_id(self) -> str:
        """The sink's consumer group: its own, so that it commits independently of scoring."""
        return f"{self.app_id}-store"
