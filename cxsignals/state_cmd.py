"""``cxsignals state show CUSTOMER``: a customer's state as the worker holds it.

The worker's durable truth is its table changelog, ``<app id>-customer-state-changelog``
(compacted; the partition :func:`streams.partitioner.customer_partition` gives the customer).
This command reads that partition from the beginning to its end offset and shows the last
record of the customer's key, decoded (:class:`streams.core.state.CustomerState`). It reads
with its own group-less consumer: it commits nothing and disturbs no worker.

What it shows is what a worker would restore after a crash: the state as of the worker's last
checkpoint (``CX_CHECKPOINT_INTERVAL_MS``), never a state whose events' outputs were not yet
delivered. A customer the worker has not checkpointed yet, or whose state was expired (a
tombstone), is reported as absent (exit 1). A missing changelog topic (no worker ran with this
``CX_APP_ID``) or an unreachable broker is exit 2, with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec
import orjson

from cxsignals.settings import Settings
from streams.core.churn import ChurnScorer
from streams.core.churn_model import ChurnParamsError, load_churn_model
from streams.core.state import CustomerState
from streams.kafka_security import PLAINTEXT, KafkaSecurity

EXIT_ABSENT = 1
EXIT_UNAVAILABLE = 2
STATE_TABLE = "customer-state"  # streams.app.STATE_TABLE (not imported: that loads Faust)
# Times in the state that are epoch seconds of event time (shown as ISO-8601 too).
_EVENT_TIMES = ("watermark", "first_seen", "first_purchase", "last_purchase", "last_negative",
                "last_cart", "last_support_alert")


class ChangelogUnavailable(RuntimeError):
    """The broker did not answer or the changelog topic does not exist (message says which)."""


@dataclass(frozen=True, slots=True)
class ChangelogEntry:
    """The last record of one key: ``value`` None is a tombstone (the state was deleted)."""

    value: bytes | None
    partition: int
    offset: int
    timestamp_ms: int


def changelog_topic(app_id: str) -> str:
    """The customer-state table's changelog (Faust names it ``<app id>-<table>-changelog``)."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def read_changelog(bootstrap_servers: str, topic: str, *,
                   partitions: Iterable[int] | None = None, key: bytes | None = None,
                   timeout_s: float = 60.0,
                   security: KafkaSecurity = PLAINTEXT) -> dict[bytes, ChangelogEntry]:
    """The last record per key of ``topic`` (the given partitions, else all), read from the
    beginning up to the end offsets seen when the read started; only ``key`` when given.

    Raises :class:`ChangelogUnavailable` when the broker does not answer or the topic is absent,
    and ``TimeoutError`` when the end offsets are not reached within ``timeout_s``.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                                 enable_auto_commit=False, request_timeout_ms=30_000,
                                 **security.kafka_python_options())
    except KafkaError as exc:
        from cxsignals.kafka_problems import explain

        raise ChangelogUnavailable(f"Kafka at {bootstrap_servers} did not answer "
                                   f"({explain(bootstrap_servers, security, exc)})") from exc
    try:
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise ChangelogUnavailable(
                f"topic {topic} does not exist: no worker with this CX_APP_ID has written a "
                "state yet (or CX_APP_ID differs from the worker's)")
        wanted = sorted(known if partitions is None else set(partitions) & known)
        tps = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = {tp: off for tp, off in consumer.end_offsets(tps).items() if off > 0}
        latest: dict[bytes, ChangelogEntry] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < off for tp, off in end.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s} s")
            for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
                stop = end.get(tp, 0)
                for record in records:
                    if record.offset >= stop or record.key is None:
                        continue
                    if key is None or record.key == key:
                        latest[record.key] = ChangelogEntry(record.value, tp.partition,
                                                            record.offset, record.timestamp)
        return latest
    finally:
        consumer.close()


def state_view(state: CustomerState) -> dict[str, Any]:
    """A JSON-ready view of a state: every field by name, event times also as ISO-8601, the
    remembered event ids as a count (they are hashes)."""
    fields: dict[str, Any] = orjson.loads(msgspec.json.encode(state.as_dict()))
    fields["seen_events"] = len(state.seen)
    del fields["seen"]
    for name in _EVENT_TIMES:
        value = getattr(state, name)
        if value is not None:
            fields[f"{name}_iso"] = _iso(value)
    return fields


def churn_view(state: CustomerState, scorer: ChurnScorer) -> dict[str, Any]:
    """Why the customer's churn risk is what it is, as of the state's watermark: the risk, the
    12-month value and every driver with its evidence (docs/scoring.md, "Explanation")."""
    return {
        "churn_risk": round(scorer(state, state.score), 4),
        "clv_12m": round(scorer.clv(state), 2),
        "drivers": scorer.drivers(state, state.score),
    }


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat().replace("+00:00", "Z")


def _text(customer: str, entry: ChangelogEntry, view: dict[str, Any]) -> str:
    head = (f"customer {customer}: score {view['score']:.2f}, churn risk {view['risk']:.4f}, "
            f"stage {view['stage']}")
    lines = [head, f"  from changelog partition {entry.partition} offset {entry.offset} "
                   f"(written {_iso(entry.timestamp_ms / 1000)})"]
    for name, value in view.items():
        if name.endswith("_iso") or name in ("score", "risk", "stage"):
            continue
        if isinstance(value, list | dict) and not value:
            continue
        iso = view.get(f"{name}_iso")
        shown = orjson.dumps(value).decode()
        lines.append(f"  {name}: {shown}" + (f" ({iso})" if iso else ""))
    return "\n".join(lines)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from streams.partitioner import customer_partition

    topic = changelog_topic(settings.app_id)
    key = args.customer.encode()
    try:
        entries = read_changelog(settings.kafka_bootstrap_servers, topic, key=key,
                                 partitions=[customer_partition(args.customer,
                                                                settings.touchpoint_partitions)],
                                 security=settings.kafka_security)
    except (ChangelogUnavailable, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    entry = entries.get(key)
    if entry is None or entry.value is None:
        why = "deleted (expired or erased)" if entry is not None else "not in"
        print(f"no state for customer {args.customer}: {why} {topic} partition "
              f"{customer_partition(args.customer, settings.touchpoint_partitions)} (the worker "
              "writes states at checkpoints; an unknown or anonymous id has none)",
              file=sys.stderr)
        return EXIT_ABSENT
    try:
        view = state_view(CustomerState.from_bytes(entry.value))
    except ValueError as exc:
        print(f"error: the state at {topic}[{entry.partition}]@{entry.offset} cannot be read: "
              f"{exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    state = CustomerState.from_bytes(entry.value)
    churn: dict[str, Any] | None = None
    if state.watermark is not None:
        try:
            scorer = ChurnScorer(load_churn_model(settings.churn_params_path), None,
                                 settings.churn_horizon_days)
            churn = churn_view(state, scorer)
        except ChurnParamsError as exc:
            print(f"warning: no churn explanation: {exc}", file=sys.stderr)
    if args.format == "json":
        print(orjson.dumps({"customer_id": args.customer, "partition": entry.partition,
                            "offset": entry.offset, "state": view, "churn": churn}).decode())
    else:
        print(_text(args.customer, entry, view))
        if churn is not None:
            print(f"  churn: risk {churn['churn_risk']:.4f}, clv_12m {churn['clv_12m']:.2f}; "
                  "drivers (log-odds vs the average customer):")
            for d in churn["drivers"]:
                print(f"    {d['name']}: {d['log_odds']:+.4f} (value {d['value']}, evidence "
                      f"{', '.join(d['evidence']) or '-'})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "state",
        help="inspect the worker's customer states (read from the state changelog)",
        description="Read the worker's customer-state changelog (<CX_APP_ID>-customer-state-"
        "changelog); nothing is committed, no worker is disturbed.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="a customer's current state: scores, counts, event times",
        description="Show the customer's state as of the worker's last checkpoint. Exit 1 "
        "when the customer has no state, 2 when Kafka or the changelog is unavailable.",
        epilog="examples: cxsignals state show c-42\n"
        "          cxsignals state show c-42 --format json | jq .state.score",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("customer", help="customer id (or an anonymous id never linked)")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=_show)
