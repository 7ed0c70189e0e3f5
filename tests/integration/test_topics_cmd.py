"""`cxsignals topics create` against the real broker: an existing topic that differs from the
settings is reported and left alone; `--alter` sets exactly the keys that differ and keeps the
operator's own settings; the partition count is never changed, only warned about."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from cxsignals.topics_cmd import TOPIC_MAX_MESSAGE_BYTES
from tests.integration.conftest import Stack

KEYS = ("message.timestamp.type", "retention.ms", "segment.ms", "max.message.bytes")


def _config(stack: Stack, topic: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:
        found = admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, configs=dict.fromkeys(KEYS))], config_filter="all")
    finally:
        admin.close()
    return {key: entry["value"] for key, entry in found["topic"][topic].items()}


def test_existing_topics_are_compared_and_altered_only_when_asked(
    stack: Stack, cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = stack.settings().topic_touchpoints
    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:  # as an older release (or an operator) made it: CreateTime, 1 partition, own segment.ms
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                      topic_configs={"segment.ms": "3600000"})])
    finally:
        admin.close()

    done = cli("topics", "create", CX_RETENTION_DAYS="3")
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith(topic + " ")]
    assert "differs: " in line
    assert "message.timestamp.type=CreateTime (want LogAppendTime)" in line
    assert "retention.ms=604800000 (want 259200000)" in line
    assert "--alter" in done.stderr
    assert f"{topic} has 1 partitions, the settings say 2" in done.stderr
    assert _config(stack, topic)["message.timestamp.type"] == "CreateTime"  # untouched

    done = cli("topics", "create", "--alter", CX_RETENTION_DAYS="3")
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith(topic + " ")]
    assert "altered: " in line and "message.timestamp.type=CreateTime" in line
    config = _config(stack, topic)
    assert config["message.timestamp.type"] == "LogAppendTime"
    assert config["retention.ms"] == "259200000"
    assert config["max.message.bytes"] == TOPIC_MAX_MESSAGE_BYTES
    assert config["segment.ms"] == "3600000"  # the operator's own setting stays

    done = cli("topics", "create", CX_RETENTION_DAYS="3")
    assert done.returncode == 0, done.stderr
    assert all(x.endswith("  exists") for x in done.stdout.splitlines()), done.stdout
    assert "--alter" not in done.stderr
