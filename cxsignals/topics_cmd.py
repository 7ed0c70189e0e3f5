"""``cxsignals topics create|list``: create the pipeline's Kafka topics (idempotent)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from cxsignals.settings import Settings
from schemas.limits import TOPIC_MAX_MESSAGE_BYTES as TOPIC_MAX_BYTES

TOPIC_MAX_MESSAGE_BYTES = str(TOPIC_MAX_BYTES)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics CX Signals needs. Touchpoints, DLQ and scores share a partition count so that
    they stay co-partitioned by customer; cx.scores is compacted (latest score per customer).
    Touchpoints carry the broker's append time (``LogAppendTime``): the worker and the sink
    judge an event's clock skew against it, whatever the producer's clock says."""
    big = {"max.message.bytes": TOPIC_MAX_MESSAGE_BYTES}
    # CX_RETENTION_DAYS: delete segments older than that (compacted scores: compact,delete, so
    # a latest score older than the retention goes too); unset: the broker's default.
    kept = retention_config(settings.retention_days)
    scores = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    if kept:
        scores = {**scores, "cleanup.policy": "compact,delete", **kept}
    return [
        TopicSpec(settings.topic_touchpoints, settings.touchpoint_partitions,
                  {**big, "message.timestamp.type": "LogAppendTime", **kept}),
        TopicSpec(settings.topic_dlq, settings.touchpoint_partitions, {**big, **kept}),
        # Rows ClickHouse refused, with the original record (of any of the sink's topics).
        TopicSpec(settings.topic_sink_dlq, settings.touchpoint_partitions, {**big, **kept}),
        TopicSpec(settings.topic_alerts_marketing, settings.alert_partitions, {**kept}),
        TopicSpec(settings.topic_alerts_support, settings.alert_partitions, {**kept}),
        # Control alerts (withheld by a rule's control_share), for the sink only.
        TopicSpec(settings.topic_alerts_control, settings.alert_partitions, {**kept}),
        TopicSpec(settings.topic_scores, settings.touchpoint_partitions, scores),
        # Internal: events re-keyed to their customer's partition (the worker also declares it).
        TopicSpec(settings.topics.keyed(settings.app_id), settings.touchpoint_partitions,
                  {**big, **kept}),
    ]


def retention_config(retention_days: int | None) -> dict[str, str]:
    """The topic config that keeps records ``retention_days`` (none when unset)."""
    if retention_days is None:
        return {}
    return {"retention.ms": str(retention_days * 86_400_000)}


def create_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create every missing topic and return the names created; existing topics stay as they are."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="cxsignals-topics",
        request_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_security.kafka_python_options(),
    )
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for spec in topic_specs(settings):
            if spec.name in existing:
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=spec.config,
                        )
                    ],
                    timeout_ms=int(timeout_s * 1000),
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import KafkaError

    try:
        if args.action == "create":
            created = create_topics(settings)
            for spec in topic_specs(settings):
                state = "created" if spec.name in created else "exists"
                print(f"{spec.name:28} {spec.partitions:3} partitions  {state}")
        else:
            for spec in topic_specs(settings):
                print(f"{spec.name:28} {spec.partitions:3} partitions  {spec.config or ''}")
    except KafkaError as exc:
        from cxsignals.kafka_problems import explain

        print(
            f"error: Kafka at {settings.kafka_bootstrap_servers} did not answer "
            f"({explain(settings.kafka_bootstrap_servers, settings.kafka_security, exc)}). "
            "Is it running? Try `make services`.",
            file=sys.stderr,
        )
        return 2
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "topics",
        help="create or list the pipeline's Kafka topics",
        description="Create the CX Signals topics (idempotent) or list their specs.",
        epilog="example: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cxsignals topics create",
    )
    parser.add_argument("action", choices=["create", "list"])
    parser.set_defaults(func=_run)
