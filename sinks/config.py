"""What the sink needs to know, handed down by the CLI (which reads the environment once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from schemas.limits import MAX_EVENT_BYTES
from schemas.topics import TopicNames
from streams.config import STALL_DUMP_S
from streams.kafka_security import KafkaSecurity

_TRUE = ("1", "true", "yes", "on")
_URL_FORM = ("CLICKHOUSE_URL must look like clickhouse://user:password@host:9000/db or "
             "clickhouses://user:password@host:9440/db?ca_certs=/path/ca.pem")


@dataclass(frozen=True, slots=True)
class ClickHouseParams:
    """Connection parameters parsed from ``CLICKHOUSE_URL``: ``clickhouse://user:pw@host:9000/db``,
    or over TLS ``clickhouses://user:pw@host:9440/db`` (same as ``?secure=true``), with
    ``?ca_certs=/path/ca.pem`` (the CA that signed the server certificate) and ``?verify=false``
    (never in production).

    ``repr`` never shows the password, and no error message holds the URL."""

    host: str = "127.0.0.1"
    port: int = 9000
    user: str = "default"
    password: str = field(default="", repr=False)
    database: str = "cx"
    secure: bool = False
    ca_certs: str | None = None
    verify: bool = True

    @classmethod
    def from_url(cls, url: str) -> ClickHouseParams:
        try:
            parsed = urlparse(url)
            port = parsed.port
            query = parse_qs(parsed.query, strict_parsing=bool(parsed.query))
        except ValueError:
            # Never echo the URL (nor the parser's message, which may quote it): it may carry a
            # password.
            raise ValueError(_URL_FORM) from None
        if parsed.scheme not in ("clickhouse", "clickhouses", "tcp"):
            raise ValueError(_URL_FORM)
        unknown = set(query) - {"secure", "ca_certs", "verify"}
        if unknown:
            raise ValueError(f"CLICKHOUSE_URL: unknown parameter(s) {', '.join(sorted(unknown))}; "
                             "known: secure, ca_certs, verify")

        def last(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        secure = parsed.scheme == "clickhouses" or (last("secure") or "").lower() in _TRUE
        verify = (last("verify") or "true").lower() in _TRUE
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=port or (9440 if secure else 9000),
            user=unquote(parsed.username or "default"),
            password=unquote(parsed.password or ""),
            database=(parsed.path or "/").lstrip("/") or "cx",
            secure=secure, ca_certs=last("ca_certs"), verify=verify,
        )

    @property
    def where(self) -> str:
        """host:port and TLS, for messages (no user, no password)."""
        return f"{self.host}:{self.port}{' (TLS)' if self.secure else ''}"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``clickhouse_driver.Client`` (without ``database``)."""
        options: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                                   "password": self.password}
        if self.secure:
            options.update(secure=True, verify=self.verify)
            if self.ca_certs:
                options["ca_certs"] = self.ca_certs
        return options


@dataclass(frozen=True, slots=True)
class SinkConfig:
    app_id: str = "cx-signals"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = field(default_factory=TopicNames)
    clickhouse: ClickHouseParams = field(default_factory=ClickHouseParams)
    batch_rows: int = 50_000
    batch_ms: int = 250
    # The broker answers the sink's fetch once it holds this many bytes, or after this long
    # (aiokafka's default, 1 byte, answers at once with whatever arrived: many small fetches,
    # each costing the broker and the sink a request). A batch collects for batch_ms anyway.
    fetch_min_bytes: int = 256 * 1024
    fetch_max_wait_ms: int = 100
    retry_max_s: float = 5.0
    max_event_bytes: int = MAX_EVENT_BYTES
    max_future_skew_s: float = 300.0
    # An event loop blocked this long has every thread's stack written to stderr (0: off).
    stall_dump_s: float = STALL_DUMP_S
    # SASL/TLS of the sink's consumer and dead-letter producer (docs/security.md).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @property
    def group_id(self) -> str:
        """The sink's consumer group: its own, so that it commits independently of scoring."""
        return f"{self.app_id}-store"
