"""What the kill -9 and rebalance tests share: seeded traffic published at a pace, waiting for
the drain, and the comparison of what the pipeline left (ClickHouse, topics, state changelog)
with an offline recomputation (:mod:`streams.recompute`) of the same events."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from cxsignals.simulator.journeys import SimConfig, SimMessage, generate
from cxsignals.simulator.publisher import publish
from cxsignals.state_cmd import changelog_topic, read_changelog
from streams.core.state import CustomerState
from streams.recompute import (
    Recomputed,
    alert_payload,
    no_deadline_rules,
    recompute,
    score_payload,
    state_differences,
)
from tests.integration.conftest import Stack, clickhouse_client

log = logging.getLogger("chaos")


def traffic(events: int, customers: int, seed: int) -> tuple[datetime, list[SimMessage]]:
    """Seeded simulator traffic, all of it in the past (event time 0.5 s apart on average, so
    event time runs ahead of wall time like a backfill; it starts at a midnight UTC, so the
    same seed gives the same messages all day), without the events known only by an anonymous
    id (their customer depends on cross-partition timing: see streams/recompute.py). Returns
    the start and the messages."""
    gap_s = 0.5
    start = (datetime.now(timezone.utc) - timedelta(seconds=events * gap_s * 1.5, days=1)
             ).replace(hour=0, minute=0, second=0, microsecond=0)
    kept = []
    for message in generate(SimConfig(customers=customers, seed=seed, start=start,
                                      total_events=events, event_gap_s=gap_s, bad_share=0.01)):
        if not message.is_bad and orjson.loads(message.value).get("customer_id") is None:
            continue
        kept.append(message)
    return start, kept


def worker_env(stack: Stack, **extra: str) -> dict[str, str]:
    """The worker's env for an exact recomputation: rules without deadline work, and no
    re-evaluation of idle customers' risk (wall-clock timer work, see streams/recompute.py)."""
    rules = no_deadline_rules(stack.tmp / "rules-no-deadlines.json")
    return {"CX_RULES_PATH": str(rules), "CX_IDLE_RISK": "false", **extra}


class PacedPublisher(threading.Thread):
    """Publishes the messages at ``rate_per_s`` in the background (the simulator's paced
    publisher: kafka-python, acks=all, idempotent)."""

    def __init__(self, stack: Stack, messages: list[SimMessage], rate_per_s: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.messages, self.rate_per_s = stack, messages, rate_per_s
        self.failed: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            stats = publish(self.messages, bootstrap_servers=self.stack.endpoints.kafka_bootstrap,
                            topic=self.stack.settings().topic_touchpoints,
                            rate_per_s=self.rate_per_s, progress=False)
            self.failed = stats.failed
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self, timeout_s: float) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), "the publisher did not finish"
        assert self.error is None, f"publishing failed: {self.error!r}"
        assert self.failed == 0, f"{self.failed} messages were not delivered"


def _end_offsets(consumer: Any, topics: list[str]) -> dict[Any, int]:
    from kafka import TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    return dict(consumer.end_offsets(tps))


def lag(stack: Stack, group: str, topics: list[str]) -> int:
    """Messages of ``topics`` not committed by ``group`` yet."""
    from kafka import KafkaAdminClient, KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=stack.endpoints.kafka_bootstrap, group_id=None)
    admin = KafkaAdminClient(bootstrap_servers=stack.endpoints.kafka_bootstrap)
    try:
        end = _end_offsets(consumer, topics)
        committed = {tp: meta.offset for tp, meta in
                     admin.list_group_offsets({group: None}).get(group, {}).items()}
    finally:
        consumer.close()
        admin.close()
    return sum(max(0, off - max(0, committed.get(tp, 0))) for tp, off in end.items())


def wait_drained(stack: Stack, timeout_s: float) -> float:
    """Wait until the worker and the sink committed everything; returns the seconds waited."""
    settings = stack.settings()
    topics = settings.topics
    worker_topics = [topics.touchpoints, topics.keyed(settings.app_id)]
    sink_topics = [topics.touchpoints, *topics.outputs()]
    started = time.monotonic()
    while True:
        left = {"worker": lag(stack, settings.app_id, worker_topics),
                "sink": lag(stack, f"{settings.app_id}-store", sink_topics)}
        if not any(left.values()):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"not drained after {timeout_s} s: {left}"
        time.sleep(1.0)


def read_topic(stack: Stack, topic: str) -> list[Any]:
    """Every record of ``topic``, each partition in offset order (partitions one after another)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=stack.endpoints.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        records: list[Any] = []
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            while consumer.position(tp) < end:
                for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                    records.extend(r for r in batch if r.offset < end)
        return records
    finally:
        consumer.close()


def expected_outcome(stack: Stack) -> Recomputed:
    """One uninterrupted pass over the touchpoint topic as published (per partition, in offset
    order), with the engine the worker runs."""
    from streams.app import build_engine

    settings = stack.settings(**worker_env(stack))
    config = settings.worker_config()
    values = [r.value for r in read_topic(stack, settings.topic_touchpoints)]
    return recompute(build_engine(config), values, config, now=datetime.now(timezone.utc))


@dataclass
class Verdict:
    """What the pipeline left, compared with the recomputation (figures for the report)."""

    valid_events: int = 0
    ch_rows: int = 0
    ch_unique: int = 0
    ch_final: int = 0
    alert_records: int = 0
    alert_ids: int = 0
    ch_alert_rows: int = 0
    ch_alert_unique: int = 0
    customers: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"valid events {self.valid_events}; touchpoint_events rows {self.ch_rows}, unique "
                f"{self.ch_unique} (duplicates before merge {self.ch_rows - self.ch_unique}), "
                f"FINAL {self.ch_final}; alert records on Kafka {self.alert_records}, ids "
                f"{self.alert_ids} (duplicates {self.alert_records - self.alert_ids}); alerts "
                f"rows {self.ch_alert_rows}, unique {self.ch_alert_unique}; customers compared "
                f"{self.customers}; problems {len(self.problems)}")


def verify(stack: Stack, expected: Recomputed) -> Verdict:
    """Compare ClickHouse, the alert and score topics and the state changelog with
    ``expected``; every discrepancy is a line in ``Verdict.problems``."""
    settings = stack.settings()
    v = Verdict(valid_events=len(expected.valid_event_ids), customers=len(expected.states))
    problems = v.problems
    ch = clickhouse_client(stack)
    (v.ch_rows, v.ch_unique), = ch.execute(
        "SELECT count(), uniqExact(event_id) FROM touchpoint_events")
    (v.ch_final,), = ch.execute("SELECT count() FROM touchpoint_events FINAL")
    stored = {row[0] for row in ch.execute("SELECT DISTINCT event_id FROM touchpoint_events")}
    if stored != expected.valid_event_ids:
        problems.append(f"touchpoint_events: {len(expected.valid_event_ids - stored)} events "
                        f"missing, {len(stored - expected.valid_event_ids)} unexpected")
    if v.ch_final != len(expected.valid_event_ids):
        problems.append(f"touchpoint_events FINAL has {v.ch_final} rows, expected "
                        f"{len(expected.valid_event_ids)}")

    # Alerts: every expected id, nothing else; a repeat carries the same id and payload.
    # Control alerts (issue 16) are on the control topic only, the others never there.
    records = [(r, topic == settings.topic_alerts_control)
               for topic in (settings.topic_alerts_marketing, settings.topic_alerts_support,
                             settings.topic_alerts_control)
               for r in read_topic(stack, topic)]
    v.alert_records = len(records)
    counts: Counter[str] = Counter()
    for record, on_control_topic in records:
        payload = alert_payload(record.value)
        alert_id = payload["alert_id"]
        counts[alert_id] += 1
        if expected.alerts.get(alert_id) != payload and counts[alert_id] == 1:
            problems.append(f"alert {alert_id} ({payload['rule']}, {payload['customer_id']}) "
                            "differs from the recomputation or is unexpected")
        if on_control_topic != (alert_id in expected.control_ids):
            problems.append(f"alert {alert_id} ({payload['rule']}) is on the "
                            f"{'control' if on_control_topic else 'alert'} topic, expected "
                            "the other")
    v.alert_ids = len(counts)
    missing = set(expected.alerts) - set(counts)
    if missing:
        problems.append(f"{len(missing)} expected alerts never published, e.g. "
                        f"{sorted(missing)[:3]}")
    (v.ch_alert_rows, v.ch_alert_unique), = ch.execute(
        "SELECT count(), uniqExact(alert_id) FROM alerts")
    if v.ch_alert_unique != len(expected.alerts):
        problems.append(f"alerts table: {v.ch_alert_unique} ids, expected {len(expected.alerts)}")

    # Latest score update per customer (the last record of its key).
    latest: dict[str, dict[str, Any]] = {}
    history: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    for record in read_topic(stack, settings.topic_scores):
        customer = record.key.decode()
        latest[customer] = score_payload(record.value)
        history.setdefault(customer, []).append((record.partition, record.offset,
                                                 latest[customer]))
    if latest != expected.scores:
        differ = [c for c in expected.scores if latest.get(c) != expected.scores[c]]
        problems.append(f"latest score update differs for {len(differ)} customers, e.g. "
                        f"{differ[:3]}; {len(set(latest) - set(expected.scores))} unexpected")
        for customer in differ[:3]:
            problems.append(f"  {customer}: expected {expected.score_counts.get(customer)} "
                            f"updates, the last {expected.scores[customer]}")
            problems.extend(f"    live [{p}]@{o}: {u}" for p, o, u in history.get(customer, []))

    # States: the changelog's last record per customer (what a restarted worker restores).
    entries = read_changelog(stack.endpoints.kafka_bootstrap, changelog_topic(settings.app_id))
    live = {key.decode(): CustomerState.from_bytes(e.value)
            for key, e in entries.items() if e.value is not None}
    if set(live) != set(expected.states):
        problems.append(f"changelog customers: {len(set(expected.states) - set(live))} missing, "
                        f"{len(set(live) - set(expected.states))} unexpected")
    mismatched: Counter[str] = Counter()
    examples: list[str] = []
    for customer, state in expected.states.items():
        if customer in live:
            fields = state_differences(live[customer], state)
            mismatched.update(fields)
            if fields and len(examples) < 5:
                got = live[customer]
                examples.append(f"  {customer}: changelog has {len(got.seen)} events up to "
                                f"{got.watermark}, expected {len(state.seen)} up to "
                                f"{state.watermark}")
    if mismatched:
        problems.append(f"state fields differing (customers per field): {dict(mismatched)}")
        problems.extend(examples)
        problems.extend(_state_history(stack, [e.split(":")[0].strip() for e in examples[:3]]))
    return v


def _wall(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


# Worker log lines that place a state's history among the rebalances (wall clock, UTC).
_LOG_MARKS = ("Setting newly assigned", "Revoking previously", "stop:", "commit before",
              "seeking back", "left out", "Restore complete", "Worker ready", "rebuilt from",
              "Traceback", "ERROR", "WARNING")


def _state_history(stack: Stack, customers: list[str]) -> list[str]:
    """For a state that differs: the customer's events on the touchpoint topic and every
    changelog record of its key (partition, offset, broker time, ids seen, watermark), and the
    workers' rebalance log lines, so that a failure in CI says where the event went."""
    settings = stack.settings()
    lines: list[str] = []
    wanted = set(customers)
    events: dict[str, list[str]] = {c: [] for c in customers}
    for r in read_topic(stack, settings.topic_touchpoints):
        try:
            body = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue
        customer = body.get("customer_id") if isinstance(body, dict) else None
        if customer in wanted:
            events[customer].append(f"[{r.partition}]@{r.offset} {_wall(r.timestamp)} "
                                    f"{body.get('event_type')} at {body.get('occurred_at')} "
                                    f"{str(body.get('event_id'))[:8]}")
    history: dict[str, list[str]] = {c: [] for c in customers}
    keys = {c.encode(): c for c in customers}
    for r in read_topic(stack, changelog_topic(settings.app_id)):
        customer = keys.get(r.key)
        if customer is None:
            continue
        if r.value is None:
            history[customer].append(f"[{r.partition}]@{r.offset} {_wall(r.timestamp)} tombstone")
            continue
        state = CustomerState.from_bytes(r.value)
        history[customer].append(f"[{r.partition}]@{r.offset} {_wall(r.timestamp)} "
                                 f"{len(state.seen)} ids, watermark {state.watermark}")
    dead: dict[str, list[str]] = {c: [] for c in customers}
    for r in read_topic(stack, settings.topic_dlq):
        customer = keys.get(r.key or b"")
        if customer is not None:
            headers = {k: v.decode(errors="replace")[:120] for k, v in r.headers or ()}
            dead[customer].append(f"[{r.partition}]@{r.offset} {_wall(r.timestamp)} {headers}")
    for customer in customers:
        lines.append(f"  {customer} dead letters: {dead[customer] or 'none'}")
        lines.append(f"  {customer} events (touchpoints [partition]@offset, published at):")
        lines.extend(f"    {e}" for e in events[customer])
        lines.append(f"  {customer} changelog records ([partition]@offset, written at):")
        lines.extend(f"    {h}" for h in history[customer])
    for log_path in sorted(stack.tmp.glob("worker-*.log")):
        marks = [line.rstrip()[:200] for line in log_path.read_text(errors="replace").splitlines()
                 if any(mark in line for mark in _LOG_MARKS)]
        lines.append(f"  {log_path.name}: {len(marks)} rebalance lines")
        lines.extend(f"    {m}" for m in marks[:60])
    return lines


def write_report(stack: Stack, name: str, lines: list[str]) -> Path:
    """Keep the figures beside the test's logs (and print them: pytest -s shows them)."""
    path = stack.tmp / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path


def conclude(stack: Stack, name: str, lines: list[str], expected: Recomputed,
             verdict: Verdict, started_s: float) -> None:
    """Write the run's figures, then fail on any difference from the recomputation."""
    lines.append("  " + verdict.summary())
    lines.extend(f"  PROBLEM: {p}" for p in verdict.problems)
    lines.append(f"  total {time.monotonic() - started_s:.0f} s")
    write_report(stack, name, lines)
    assert expected.alerts, "the traffic raised no alert: the test would prove nothing"
    assert not verdict.problems, "\n".join(verdict.problems)
