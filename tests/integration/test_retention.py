"""Issue 14 item 6 against the real services: `cxsignals retention apply` drops the expired
monthly partitions of every table on the local 18.16 server (no TTL there) and keeps recent
ones; `cxsignals topics create` sets retention.ms from CX_RETENTION_DAYS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from sinks.retention import RETAINED_TABLES, Retention
from tests.integration.conftest import Stack, clickhouse_client


def _rows(ch: Any, db: str) -> dict[str, list[str]]:
    """The partitions with rows, per retained table."""
    found: dict[str, list[str]] = {}
    for table, partition in ch.execute(
            "SELECT table, partition_id FROM system.parts WHERE database = %(db)s AND active "
            "GROUP BY table, partition_id ORDER BY table, partition_id", {"db": db}):
        found.setdefault(table, []).append(partition)
    return found


def test_retention_drops_old_partitions_keeps_recent_ones_and_sets_topic_retention(
    stack: Stack, cli: Callable[..., Any],
) -> None:
    assert cli("migrate").returncode == 0
    ch = clickhouse_client(stack)
    db = stack.database
    old = datetime(2020, 1, 15, tzinfo=timezone.utc)
    recent = datetime.now(timezone.utc) - timedelta(days=1)
    for at in (old, recent):
        ts = int(at.timestamp())
        # (INSERT ... SELECT: clickhouse_driver waits for data blocks after INSERT ... VALUES)
        ch.execute(f"INSERT INTO {db}.touchpoint_events (event_id, occurred_at, customer_id) "
                   f"SELECT 'e-{ts}', toDateTime({ts}), 'c-1'")
        ch.execute(f"INSERT INTO {db}.customer_scores (customer_id, updated_at) "
                   f"SELECT 'c-1', toDateTime({ts})")
        ch.execute(f"INSERT INTO {db}.alerts (alert_id, customer_id, event_time) "
                   f"SELECT 'a-{ts}', 'c-1', toDateTime({ts})")
        ch.execute(f"INSERT INTO {db}.dead_letters (received_at, raw) "
                   f"SELECT toDateTime({ts}), 'x'")
    before = _rows(ch, db)
    old_month, recent_month = old.strftime("%Y%m"), recent.strftime("%Y%m")
    assert all(old_month in before[t] for t in ("touchpoint_events", "customer_scores",
                                               "alerts", "dead_letters"))
    assert old_month in before["touchpoint_rollup_hourly"]  # filled by the view

    dry = cli("retention", "apply", "--dry-run", "--format", "json", CX_RETENTION_DAYS="90")
    assert dry.returncode == 0, dry.stderr
    planned = orjson.loads(dry.stdout)
    assert {(d["table"], d["partition"]) for d in planned["dropped"]} == {
        (t, old_month) for t in RETAINED_TABLES}
    assert "would drop" in dry.stderr and "TTL: not supported" in dry.stderr
    assert _rows(ch, db) == before  # a dry run changes nothing

    done = cli("retention", "apply", CX_RETENTION_DAYS="90")
    assert done.returncode == 0, done.stderr
    after = _rows(ch, db)
    assert all(after[t] == [recent_month] for t in RETAINED_TABLES), after
    again = Retention(ch.execute, db, (18, 16)).apply(90)
    assert again.drops == [] and _rows(ch, db) == after  # idempotent

    # Kafka: topics create sets retention.ms (scores: compacted and deleted after it).
    assert cli("topics", "create", CX_RETENTION_DAYS="7").returncode == 0
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    settings = stack.settings()
    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:
        names = (settings.topic_touchpoints, settings.topic_alerts_support,
                 settings.topic_dlq, settings.topic_scores)
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        admin.close()
    configs = _topic_configs(described)
    for name in names:
        assert configs[name]["retention.ms"] == str(7 * 86_400_000), name
    assert configs[settings.topic_scores]["cleanup.policy"] == "compact,delete"


def _topic_configs(described: Any) -> dict[str, dict[str, str]]:
    """kafka-python 3's describe_configs answer -> topic -> config name -> value."""
    return {topic: {name: entry["value"] for name, entry in configs.items()}
            for topic, configs in described["topic"].items()}
