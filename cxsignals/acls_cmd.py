"""``cxsignals acls apply|list``: the least-privilege Kafka ACLs of the three principals of
docs/security.md, for this deployment's topic names and app id.

* ``cx-worker`` (the scoring worker and the sink): reads the touchpoints and the outputs, writes
  alerts, scores and dead letters, and owns everything named after the app id (the keyed topic,
  the tables' changelogs, Faust's leader topic; consumer groups ``<app id>`` and
  ``<app id>-store``) through PREFIXED patterns, so that Faust can create its internal topics.
* ``cx-publisher``: writes the touchpoint topic, nothing else.
* ``cx-reader``: reads the alert and score topics, with consumer groups named ``cx-reader*``.

Applying is idempotent (Kafka ignores an ACL that exists). Run it as a principal allowed to alter
ACLs: locally ANONYMOUS on the PLAINTEXT listener (a super user of deploy/local), elsewhere the
admin's KAFKA_* settings. ``deploy/local/services.sh up`` and ``make setup`` run it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from cxsignals.settings import Settings
from schemas.topics import TopicNames
from streams.kafka_security import KafkaSecurity

WORKER, PUBLISHER, READER = "cx-worker", "cx-publisher", "cx-reader"


@dataclass(frozen=True, slots=True)
class Grant:
    """One ALLOW ACL: principal (user name), operation, resource type, name, pattern type."""

    user: str
    operation: str  # READ, WRITE, CREATE, DESCRIBE, DESCRIBE_CONFIGS
    resource: str  # TOPIC or GROUP
    name: str
    pattern: str = "LITERAL"  # or PREFIXED

    def __str__(self) -> str:
        return (f"User:{self.user:13} {self.operation:16} {self.resource:5} "
                f"{self.pattern.lower()} {self.name}")


def grants(topics: TopicNames, app_id: str, *, worker: str = WORKER,
           publisher: str = PUBLISHER, reader: str = READER) -> list[Grant]:
    """Every ACL the three principals need, and nothing more."""
    out: list[Grant] = []
    # The control topic (withheld alerts) is the worker's output and the sink's input only:
    # cx-reader never sees control alerts.
    outputs = (topics.alerts_marketing, topics.alerts_support, topics.alerts_control,
               topics.scores, topics.dead_letters)
    for topic in (topics.touchpoints, *outputs):
        out += [Grant(worker, "READ", "TOPIC", topic), Grant(worker, "DESCRIBE", "TOPIC", topic)]
    for topic in (*outputs, topics.sink_dead_letters):
        out.append(Grant(worker, "WRITE", "TOPIC", topic))
    out.append(Grant(worker, "DESCRIBE", "TOPIC", topics.sink_dead_letters))
    # Faust's own topics (<app id>.touchpoints.keyed, <app id>-<table>-changelog,
    # <app id>-__assignor-__leader) and the consumer groups <app id> and <app id>-store.
    for operation in ("READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"):
        out.append(Grant(worker, operation, "TOPIC", app_id, "PREFIXED"))
    out.append(Grant(worker, "READ", "GROUP", app_id, "PREFIXED"))

    out += [Grant(publisher, "WRITE", "TOPIC", topics.touchpoints),
            Grant(publisher, "DESCRIBE", "TOPIC", topics.touchpoints)]

    for topic in (topics.alerts_marketing, topics.alerts_support, topics.scores):
        out += [Grant(reader, "READ", "TOPIC", topic), Grant(reader, "DESCRIBE", "TOPIC", topic)]
    out.append(Grant(reader, "READ", "GROUP", reader, "PREFIXED"))
    return out


def _acl(grant: Grant) -> Any:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return ACL(
        principal=f"User:{grant.user}", host="*", operation=ACLOperation[grant.operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(ResourceType[grant.resource], grant.name,
                                         ACLResourcePatternType[grant.pattern]))


def _admin(bootstrap_servers: str, security: KafkaSecurity) -> Any:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="cxsignals-acls",
                            request_timeout_ms=30_000, **security.kafka_python_options())


def apply_grants(bootstrap_servers: str, security: KafkaSecurity, wanted: list[Grant]) -> None:
    """Create ``wanted`` (existing ACLs stay); raises RuntimeError naming what failed."""
    admin = _admin(bootstrap_servers, security)
    try:
        result = admin.create_acls([_acl(grant) for grant in wanted])
    finally:
        admin.close()
    failed = result.get("failed") or []
    if failed:
        raise RuntimeError(f"{len(failed)} ACL(s) were refused, first: {failed[0]}")


def remove_grants(bootstrap_servers: str, security: KafkaSecurity, unwanted: list[Grant]) -> None:
    """Delete exactly ``unwanted`` (used by tests to leave no ACLs behind)."""
    admin = _admin(bootstrap_servers, security)
    try:
        admin.delete_acls([_acl(grant) for grant in unwanted])
    finally:
        admin.close()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import KafkaError

    wanted = grants(settings.topics, settings.app_id)
    if args.action == "list":
        for grant in wanted:
            print(grant)
        return 0
    try:
        apply_grants(settings.kafka_bootstrap_servers, settings.kafka_security, wanted)
    except (KafkaError, RuntimeError) as exc:
        print(f"error: could not apply the ACLs on Kafka at {settings.kafka_bootstrap_servers} "
              f"({settings.kafka_security.describe()}): {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    print(f"{len(wanted)} ACLs for {WORKER}, {PUBLISHER}, {READER} "
          f"(app id {settings.app_id})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "acls",
        help="apply or list the Kafka ACLs of cx-worker, cx-publisher and cx-reader",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cxsignals acls apply",
    )
    parser.add_argument("action", choices=["apply", "list"])
    parser.set_defaults(func=_run)
