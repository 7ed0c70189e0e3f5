"""Prometheus metrics of the sink process (prometheus-client, default registry).

The names are used by deploy/prometheus rules and the Grafana dashboards: rename them together.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

clickhouse_rows = Counter(
    "cx_clickhouse_rows_written_total", "Rows written to ClickHouse", ["table"]
)
clickhouse_insert_seconds = Histogram(
    "cx_clickhouse_insert_seconds",
    "Duration of one successful columnar insert",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
event_to_row = Histogram(
    "cx_sink_event_to_row_seconds",
    "Publish (the touchpoint record's Kafka timestamp) to its row acknowledged by ClickHouse: "
    "how fresh the tables are",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
clickhouse_batch_rows = Histogram(
    "cx_clickhouse_batch_rows",
    "Rows per insert",
    ["table"],
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000),
)
clickhouse_retries = Counter(
    "cx_clickhouse_insert_retries_total", "Insert attempts that failed and were retried", ["table"]
)
clickhouse_failures = Counter(
    "cx_clickhouse_insert_failures_total",
    "Failed insert attempts (retried, or bisected when permanent)",
    ["table"],
)
sink_processing_errors = Counter(
    "cx_sink_processing_errors_total",
    "Records the sink could not turn into rows (stored as dead letters instead)",
)
sink_up = Gauge("cx_sink_up", "1 while the sink's consumer is running")
sink_lag = Gauge(
    "cx_sink_consumer_lag_messages",
    "High-water mark minus the sink's position",
    ["topic", "partition"],
)
sink_dead_lettered_rows = Counter(
    "cx_sink_dead_lettered_rows_total",
    "Rows ClickHouse cannot take, delivered to the sink dead-letter topic (code: ClickHouse's)",
    ["table", "code"],
)
sink_stuck_seconds = Gauge(
    "cx_sink_stuck_seconds",
    "How long the sink has been retrying what is named (clickhouse, kafka, sink_dlq); 0 = not",
    ["what"],
)
sink_kafka_retries = Counter(
    "cx_sink_kafka_retries_total",
    "Failed attempts to reach Kafka: start-up (start) or dead-letter delivery (sink_dlq)",
    ["what"],
)
