"""Prometheus metrics of a worker (prometheus-client, default registry); the sink's own are in
:mod:`sinks.metrics`.

Names carry their unit; labels never carry customer ids or other personal data. The same names
are used by deploy/prometheus rules and the Grafana dashboards: rename them together.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)
SCORE_BUCKETS = tuple(float(b) for b in range(10, 101, 10))
RISK_BUCKETS = tuple(round(b / 10, 1) for b in range(1, 11))

messages_consumed = Counter(
    "cx_messages_consumed_total", "Messages read from a topic by the worker", ["topic"]
)
events_processed = Counter(
    "cx_events_processed_total", "Valid events fully processed (scored)", ["event_type"]
)
dead_letters = Counter(
    "cx_dead_letters_total", "Messages sent to the dead-letter topic", ["code"]
)
duplicates_skipped = Counter(
    "cx_duplicates_skipped_total", "Redelivered events (same event_id) that changed nothing"
)
late_events_dropped = Counter(
    "cx_late_events_dropped_total", "Events older than the grace period: stored, not windowed"
)
processing_lag = Histogram(
    "cx_processing_lag_seconds",
    "Event time (occurred_at) to processed, wall clock",
    buckets=LATENCY_BUCKETS_S,
)
event_to_alert = Histogram(
    "cx_event_to_alert_seconds",
    "Kafka timestamp of the triggering event to the alert handed to Kafka",
    buckets=LATENCY_BUCKETS_S,
)
alerts_emitted = Counter("cx_alerts_emitted_total", "Alerts published", ["rule", "kind"])
alerts_withheld = Counter(
    "cx_alerts_withheld_total",
    "Control alerts: passed the policy, withheld by the rule's control_share, recorded only",
    ["rule", "kind"],
)
alerts_policy = Counter(
    "cx_alerts_policy_total",
    "Alerts held back by policy: action is suppressed or deferred",
    ["rule", "kind", "reason", "action"],
)
scores_published = Counter("cx_scores_published_total", "Score updates published to cx.scores")
experience_score = Histogram(
    "cx_experience_score", "Experience score (0-100) after each event", buckets=SCORE_BUCKETS
)
churn_risk = Histogram(
    "cx_churn_risk", "Churn risk (0-1) after each event", buckets=RISK_BUCKETS
)
processing_errors = Counter(
    "cx_processing_errors_total",
    "Unexpected errors while processing a valid event (the event is dead-lettered)",
    ["stage"],
)
consumer_lag = Gauge(
    "cx_kafka_consumer_lag_messages",
    "High-water mark minus the worker's position",
    ["topic", "partition"],
)
states_expired = Counter(
    "cx_states_expired_total",
    "Customer states deleted after CX_STATE_TTL_DAYS without activity (tombstoned)",
)
erase_requests = Counter(
    "cx_erase_requests_total",
    "Erase requests handled (one per erased id, repeats included): state, links and score gone",
)
customers_in_state = Gauge(
    "cx_customers_in_state", "Customers whose state this worker holds (assigned partitions)"
)
worker_up = Gauge("cx_worker_up", "1 while the worker's Faust app is running")
rebalances = Counter("cx_rebalances_total", "Partition assignments received by this worker")
batch_messages = Histogram(
    "cx_batch_messages",
    "Messages per scoring batch (one fetch: scored, written, handed over and acked together)",
    buckets=(1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000),
)
batch_flush_seconds = Histogram(
    "cx_batch_flush_seconds",
    "Duration of one scoring batch: scoring, outputs and states durable, acks",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
batch_retries = Counter(
    "cx_batch_retries_total", "Failed state writes or sends of a batch (each is retried)",
    ["stage"],
)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: for the per-event counters, where ``labels()``
    (a lock, a tuple and a dict lookup per call) costs more than the increment."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found
