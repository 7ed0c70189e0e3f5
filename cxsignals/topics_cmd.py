"""``cxsignals topics create|list``: create the pipeline's Kafka topics (idempotent); report
existing topics whose config differs from the settings, and with ``--alter`` set those keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class ConfigDrift:
    """One config key of an existing topic that differs from its spec."""

    key: str
    current: str | None  # the effective value (None: the broker did not say)
    wanted: str

    def describe(self) -> str:
        return f"{self.key}={self.current if self.current is not None else '?'} " \
               f"(want {self.wanted})"


@dataclass(frozen=True)
class TopicState:
    """What ``ensure_topics`` found and did for one topic."""

    spec: TopicSpec
    created: bool
    partitions: int  # the topic's partition count (the spec's when just created)
    drift: tuple[ConfigDrift, ...] = ()
    altered: bool = False
    unchecked: str | None = None  # why the config could not be compared

    @property
    def status(self) -> str:
        if self.created:
            return "created"
        if self.unchecked:
            return f"exists (config not compared: {self.unchecked})"
        if self.altered:
            return "altered: " + ", ".join(d.describe() for d in self.drift)
        if self.drift:
            return "differs: " + ", ".join(d.describe() for d in self.drift)
        return "exists"


def _same(key: str, current: str | None, wanted: str) -> bool:
    if key == "cleanup.policy" and current is not None:  # an unordered list
        return {p.strip() for p in current.split(",")} == {p.strip() for p in wanted.split(",")}
    return current == wanted


def config_drift(spec: TopicSpec,
                 current: Mapping[str, str | None]) -> tuple[ConfigDrift, ...]:
    """The keys of ``spec.config`` whose effective value on the topic (``current``: key ->
    value) differs. Keys the spec does not name are never drift: an
    operator's own settings stay."""
    return tuple(ConfigDrift(key, current.get(key), wanted)
                 for key, wanted in sorted(spec.config.items())
                 if not _same(key, current.get(key), wanted))


def ensure_topics(settings: Settings, *, alter: bool = False,
                  timeout_s: float = 30.0) -> list[TopicState]:
    """Create every missing topic; compare each existing one with its spec and, with
    ``alter``, set the keys that differ (an incremental SET of those keys only: the topic's
    other settings stay). Partition counts are never changed: more partitions would move
    customers to other partitions, away from their state."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="cxsignals-topics",
        request_timeout_ms=int(timeout_s * 1000),
        **settings.kafka_security.kafka_python_options(),
    )
    try:
        existing = set(admin.list_topics())
        created: list[TopicSpec] = []
        present: list[TopicSpec] = []
        specs = topic_specs(settings)
        for spec in specs:
            if spec.name in existing:
                present.append(spec)
                continue
            try:
                admin.create_topics(
                    [NewTopic(spec.name, num_partitions=spec.partitions,
                              replication_factor=settings.replication_factor,
                              topic_configs=spec.config)],
                    timeout_ms=int(timeout_s * 1000),
                )
                created.append(spec)
            except TopicAlreadyExistsError:  # created meanwhile by someone else
                present.append(spec)
        states = [TopicState(spec, created=True, partitions=spec.partitions)
                  for spec in created]
        if not present:
            return states
        # One request for all existing topics: their partitions, then the specs' config keys.
        partitions = {topic["name"]: len(topic["partitions"])
                      for topic in admin.describe_topics([spec.name for spec in present])}
        configured = [spec for spec in present if spec.config]
        found: dict[str, Any] = {}
        unchecked = None
        if configured:
            try:
                found = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, spec.name,
                                    configs=dict.fromkeys(spec.config))
                     for spec in configured],
                    config_filter="all")["topic"]
            except KafkaError as exc:  # e.g. a principal without DESCRIBE_CONFIGS
                unchecked = type(exc).__name__
        # The effective value, whether the topic, the broker or the default sets it.
        drifts = {spec.name: config_drift(spec, {key: entry.get("value") for key, entry
                                                 in found[spec.name].items()})
                  for spec in configured if spec.name in found}
        altering = {name: drift for name, drift in drifts.items() if drift} if alter else {}
        if altering:
            admin.alter_configs([
                ConfigResource(ConfigResourceType.TOPIC, name,
                               configs={d.key: d.wanted for d in drift})
                for name, drift in altering.items()])
        states += [TopicState(spec, created=False, partitions=partitions[spec.name],
                              drift=drifts.get(spec.name, ()), altered=spec.name in altering,
                              unchecked=unchecked if spec.config else None)
                   for spec in present]
        by_name = {state.spec.name: state for state in states}
        return [by_name[spec.name] for spec in specs]  # in the specs' order
    finally:
        admin.close()


def create_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create every missing topic and return the names created; existing topics stay as they
    are."""
    return [t.spec.name for t in ensure_topics(settings, timeout_s=timeout_s) if t.created]


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import KafkaError

    try:
        if args.action == "create":
            states = ensure_topics(settings, alter=args.alter)
            for state in states:
                print(f"{state.spec.name:28} {state.partitions:3} partitions  {state.status}")
            for state in states:
                if not state.created and state.partitions != state.spec.partitions:
                    print(f"warning: {state.spec.name} has {state.partitions} partitions, the "
                          f"settings say {state.spec.partitions}; partition counts are never "
                          "changed (customers would move away from their state): set "
                          "CX_TOUCHPOINT_PARTITIONS / CX_ALERT_PARTITIONS to the topics' "
                          "counts", file=sys.stderr)
            if any(state.drift and not state.altered for state in states):
                print("warning: some existing topics differ from the settings (above); "
                      "`cxsignals topics create --alter` sets the keys that differ and leaves "
                      "every other setting of the topics as it is", file=sys.stderr)
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
        epilog="examples:\n  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cxsignals topics create\n"
               "  CX_RETENTION_DAYS=30 cxsignals topics create --alter   # existing topics too",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["create", "list"])
    parser.add_argument("--alter", action="store_true",
                        help="create: also set the config keys in which existing topics differ "
                             "from the settings (their other settings stay)")
    parser.set_defaults(func=_run)
