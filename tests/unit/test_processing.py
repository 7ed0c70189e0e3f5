"""Customer states around the engine, with a plain dict as the store (no broker)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from schemas.topics import TopicNames
from streams.core.state import CustomerState
from streams.processing import Processor
from tests.journeys import (
    build_engine,
    cart_abandoned,
    detractor,
    make_event,
    promoter_after_purchase,
    repeated_unresolved_contacts,
)

# Yesterday at noon UTC: recent, and outside the shipped quiet hours (21-08) whatever the hour
# the test runs at (a cart recovery due 30 min later must not be deferred to 08:00).
NOW = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=12, minute=0, second=0,
                                                               microsecond=0)


class _Store:
    """States by (partition, key), counting reads and writes like the worker's RocksDB."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes] = {}
        self.reads = 0
        self.writes = 0
        self.fail_writes = False

    def get(self, partition: int, key: bytes) -> bytes | None:
        self.reads += 1
        return self.data.get((partition, key))

    def write_pending(self, processor: Processor) -> int:
        """What the pipeline does after the outputs are durable: write each dirty state once."""
        writes = processor.pending_writes()
        for write in writes:
            if self.fail_writes:
                raise OSError("disk full")
            self.store(write, processor)
        return len(writes)

    def store(self, write: Any, processor: Processor) -> None:
        """One write stored (a value of None deletes), then reported written."""
        key = (write.partition, write.customer_id.encode())
        if write.value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = write.value
        self.writes += 1
        processor.written(write)


def _processor(store: _Store, engine: Any = None, **kwargs: Any) -> Processor:
    return Processor(engine or build_engine(), store.get, TopicNames(), **kwargs)


def test_a_state_stays_pending_until_written_then_is_written_once() -> None:
    store = _Store()
    processor = _processor(store)
    journey = cart_abandoned("c-proc")
    outcomes = [processor.process("c-proc", 3, e, NOW) for e in journey.events]
    assert all(o is not None for o in outcomes)
    assert not store.data and processor.dirty_customers == 1
    assert [a.rule for o in outcomes if o for a in (*o.alerts, *o.control_alerts)] == [
        "cart_recovery"]
    assert store.write_pending(processor) == 1
    assert list(store.data) == [(3, b"c-proc")]  # in the partition the caller named
    assert processor.dirty_customers == 0 and store.write_pending(processor) == 0
    saved = store.data[(3, b"c-proc")]
    assert processor.process("c-proc", 3, journey.events[0], NOW) is None  # a redelivery
    assert store.write_pending(processor) == 0 and store.data[(3, b"c-proc")] == saved


def test_outputs_go_to_the_configured_topics() -> None:
    store = _Store()
    topics = TopicNames(alerts_marketing="m", alerts_support="s", scores="sc")
    processor = Processor(build_engine(), store.get, topics)
    outputs = []
    for event in cart_abandoned("c-out").events:
        outcome = processor.process("c-out", 0, event, NOW)
        assert outcome is not None
        outputs.extend(processor.outputs(outcome, "c-out", kafka_ts_s=None))
    assert {o.topic for o in outputs} <= {"m", "s", "sc"}
    assert any(o.topic == "m" for o in outputs) and any(o.topic == "sc" for o in outputs)
    assert all(o.key == b"c-out" and o.partition is None for o in outputs)


def test_deadlines_are_indexed_as_states_change() -> None:
    store = _Store()
    processor = _processor(store)
    at = NOW - timedelta(minutes=1)
    abandon = make_event("c-due", "c-due:1", "cart_abandon", at,
                         {"cart_id": "k", "cart_value": 250.0, "currency": "EUR"})
    processor.process("c-due", 2, abandon, NOW)
    now_s = NOW.timestamp()
    assert processor.deadlines.pop_due(2, now_s, 10) == []
    later = now_s + 3600
    assert processor.deadlines.pop_due(1, later, 10) == []  # another partition
    assert processor.deadlines.pop_due(2, later, 10) == ["c-due"]
    assert processor.deadlines.pop_due(2, later, 10) == []  # returned once
    outcome = processor.tick("c-due", 2, datetime.fromtimestamp(later, timezone.utc))
    assert outcome is not None and [a.rule for a in outcome.alerts] == ["cart_recovery"]


def test_state_cache_skips_decoding_and_is_dropped_on_rebalance() -> None:
    store = _Store()
    processor = _processor(store, max_cached_states=10)
    events = cart_abandoned("c-cache").events
    processor.process("c-cache", 0, events[0], NOW)
    store.write_pending(processor)
    processor.process("c-cache", 0, events[1], NOW)
    assert store.reads == 1  # the second event used the cached state
    processor.forget_states()  # a state not written yet survives a rebalance ...
    processor.process("c-cache", 0, events[2], NOW)
    assert store.reads == 1
    store.write_pending(processor)
    processor.forget_states()  # ... a written one is read again
    processor.process("c-cache", 0, events[3], NOW)
    assert store.reads == 2


def test_a_state_handed_out_stays_dirty_until_written_and_is_not_handed_out_twice() -> None:
    """The pipeline writes a fetch's states while the next fetch is scored: the next fetch
    hands out only what changed since, and a write that fails is retried by whoever holds it."""
    store = _Store()
    processor = _processor(store)
    for n in range(3):
        processor.process(f"c-{n}", 0, make_event(f"c-{n}", f"e-{n}", "page_view", NOW,
                                                  {"url": "/"}), NOW)
    store.fail_writes = True
    with pytest.raises(OSError):
        store.write_pending(processor)
    assert processor.dirty_customers == 3 and not store.data
    assert processor.pending_writes() == []  # all three are in flight already
    processor.process("c-1", 0, make_event("c-1", "e-9", "page_view", NOW, {"url": "/"}), NOW)
    [newer] = processor.pending_writes()
    assert newer.customer_id == "c-1"
    processor.written(newer)
    assert processor.dirty_customers == 2


class _FailOn:
    """Wraps an engine; raises on the given event ids (after mutating the state, as a bug
    might)."""

    def __init__(self, engine: Any, *event_ids: str) -> None:
        self.engine, self.event_ids, self.sentiment = engine, set(event_ids), engine.sentiment

    def process(self, state: Any, customer_id: str, event: Any, *, now: datetime) -> Any:
        outcome = self.engine.process(state, customer_id, event, now=now)
        if event.event_id in self.event_ids:
            raise RuntimeError("bug")
        return outcome

    def tick(self, state: Any, customer_id: str, *, now: datetime) -> Any:
        return self.engine.tick(state, customer_id, now=now)

    def risk_wakeup_s(self, state: Any, now_s: float) -> Any:
        return self.engine.risk_wakeup_s(state, now_s)

    def risk_first_look_s(self, state: Any, now_s: float) -> Any:
        return self.engine.risk_first_look_s(state, now_s)


@pytest.mark.parametrize("kept", ["events", "message values"])
def test_an_engine_failure_mid_batch_rebuilds_the_state_without_the_failed_event(
        kept: str) -> None:
    """Kept as message values (what the pipeline passes): the processor holds the bytes, not
    the decoded events, and the rebuild decodes them again."""
    events = cart_abandoned("c-fail").events
    raw: list[bytes | None] = (
        [e.model_dump_json(exclude_none=True).encode() for e in events]
        if kept == "message values" else [None] * len(events))
    store = _Store()
    failing = _processor(store, _FailOn(build_engine(), events[2].event_id))
    failing.process("c-fail", 0, events[0], NOW, raw=raw[0])
    store.write_pending(failing)
    failing.process("c-fail", 0, events[1], NOW, raw=raw[1])
    assert failing._applied["c-fail"] == [raw[1] or events[1]]
    with pytest.raises(RuntimeError):
        failing.process("c-fail", 0, events[2], NOW, raw=raw[2])
    store.write_pending(failing)
    # The same as a worker that never saw events[2]: events 0 and 1 applied, once each.
    reference = _Store()
    clean = _processor(reference)
    clean.process("c-fail", 0, events[0], NOW)
    clean.process("c-fail", 0, events[1], NOW)
    reference.write_pending(clean)
    rebuilt = CustomerState.from_bytes(store.data[(0, b"c-fail")])
    expected = CustomerState.from_bytes(reference.data[(0, b"c-fail")])
    assert rebuilt.seen == expected.seen and len(rebuilt.seen) == 2
    assert rebuilt.score == expected.score and rebuilt.pending_carts == expected.pending_carts
    rebuilt_fields, expected_fields = rebuilt.as_dict(), expected.as_dict()
    for fields in (rebuilt_fields, expected_fields):
        del fields["risk_wake_s"]  # scheduled from the wall clock
    assert rebuilt_fields == expected_fields
    # events[2] can be replayed later (from the dead-letter topic) and is applied then.
    assert clean.process("c-fail", 0, events[2], NOW) is not None


def test_state_cache_is_bounded() -> None:
    store = _Store()
    processor = _processor(store, max_cached_states=2)
    for n in range(3):
        processor.process(f"c-{n}", 0, make_event(f"c-{n}", f"e-{n}", "page_view", NOW,
                                                  {"url": "/"}), NOW)
    store.write_pending(processor)
    reads = store.reads
    processor.process("c-0", 0, make_event("c-0", "e-x", "page_view", NOW, {"url": "/"}), NOW)
    assert store.reads == reads + 1  # c-0 was evicted, c-1 and c-2 stayed


def _decoded_dirty(processor: Processor) -> int:
    return sum(isinstance(held, CustomerState) for held, _p, _c in processor._dirty.values())


def _fields(value: bytes) -> dict[str, Any]:
    fields = CustomerState.from_bytes(value).as_dict()
    # The first look is scheduled from the wall clock: compared as scheduled or not.
    fields["risk_wake_s"] = fields["risk_wake_s"] is not None
    return fields


def test_a_changed_state_the_cache_evicts_is_kept_encoded_and_decoded_when_it_comes_back(
        ) -> None:
    """Decoded states in memory stay within the cache: an evicted changed state is encoded at
    once (not read from the store again when its customer comes back), the events applied
    before the encoding are let go, and a failure rebuilds from the encoding."""
    store = _Store()
    events = cart_abandoned("c-a").events
    processor = _processor(store, _FailOn(build_engine(), events[3].event_id),
                           max_cached_states=1)
    view = {"url": "/"}
    processor.process("c-a", 0, events[0], NOW, raw=b"kept-0")
    processor.process("c-a", 0, events[1], NOW, raw=b"kept-1")
    assert processor._applied["c-a"] == [b"kept-0", b"kept-1"]
    processor.process("c-b", 0, make_event("c-b", "e-b", "page_view", NOW, view), NOW)
    held, _partition, _change = processor._dirty["c-a"]
    assert isinstance(held, bytes) and _decoded_dirty(processor) == 1
    assert "c-a" not in processor._applied  # the encoding holds them
    assert len(CustomerState.from_bytes(held).seen) == 2
    reads = store.reads
    processor.process("c-a", 0, events[2], NOW)  # decoded from its encoding, not read
    assert store.reads == reads and _decoded_dirty(processor) == 1
    with pytest.raises(RuntimeError):
        processor.process("c-a", 0, events[3], NOW)  # rebuilt: the encoding + events[2]
    store.write_pending(processor)
    reference = _Store()
    clean = _processor(reference)
    for event in events[:3]:
        clean.process("c-a", 0, event, NOW)
    reference.write_pending(clean)
    assert _fields(store.data[(0, b"c-a")]) == _fields(reference.data[(0, b"c-a")])
    assert processor.dirty_customers == 0 and not processor._base and not processor._applied


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_small_cache_stores_the_same_states_as_one_that_holds_everyone(seed: int) -> None:
    """Random interleavings of 12 customers' journeys through a 3-state cache: writes handed
    out and completed late, in any order of fetches, an engine failure in each journey, a
    rebalance. The stored states equal those of a processor whose cache holds everyone, and
    at every step up to the rebalance at most the cache's changed states are decoded."""
    rng = random.Random(seed)
    journeys = [cart_abandoned, detractor, repeated_unresolved_contacts,
                promoter_after_purchase]
    queues = {f"c-{n}": list(journeys[n % 4](f"c-{n}").events) for n in range(12)}
    failing = {rng.choice(q[1:]).event_id for q in queues.values()}
    script: list[tuple[str, Any]] = []
    while any(queues.values()):
        customer = rng.choice([c for c, q in queues.items() if q])
        script.append(("event", queues[customer].pop(0)))
        roll = rng.random()
        if roll < 0.15:
            script.append(("hand_out", None))
        elif roll < 0.3:
            script.append(("complete", None))
        elif roll < 0.32:
            script.append(("rebalance", None))

    def run(cache: int) -> tuple[dict[tuple[int, bytes], bytes], int]:
        store = _Store()
        processor = _processor(store, _FailOn(build_engine(), *failing),
                               max_cached_states=cache)
        in_flight: list[list[Any]] = []
        most_decoded, rebalanced = 0, False
        for action, event in script:
            if action == "event":
                try:
                    processor.process(event.customer_id, 0, event, NOW,
                                      raw=event.model_dump_json(exclude_none=True).encode())
                except RuntimeError:
                    assert event.event_id in failing
            elif action == "hand_out":
                in_flight.append(processor.pending_writes())
            elif action == "complete" and in_flight:
                for write in in_flight.pop(0):
                    store.store(write, processor)
            elif action == "rebalance":
                processor.forget_states()
                rebalanced = True  # the cache is dropped: its changed states stay decoded
            if not rebalanced:
                most_decoded = max(most_decoded, _decoded_dirty(processor))
        for writes in in_flight:
            for write in writes:
                store.store(write, processor)
        store.write_pending(processor)
        assert processor.dirty_customers == 0 and not processor._base
        return store.data, most_decoded

    small, most_decoded = run(3)
    everyone, _ = run(10_000)
    assert small.keys() == everyone.keys() and len(small) == 12
    for key, value in small.items():
        assert _fields(value) == _fields(everyone[key]), key
    assert most_decoded <= 3


def test_a_state_changed_while_its_write_is_under_way_stays_pending() -> None:
    store = _Store()
    processor = _processor(store)
    view = {"url": "/"}
    processor.process("c-w", 0, make_event("c-w", "e-1", "page_view", NOW, view), NOW)
    [write] = processor.pending_writes()
    # The batch awaits the broker; meanwhile the customer changes again.
    processor.process("c-w", 0, make_event("c-w", "e-2", "page_view", NOW, view), NOW)
    processor.written(write)
    assert processor.dirty_customers == 1  # e-2's change is not lost
    [newer] = processor.pending_writes()
    assert newer.value is not None and len(CustomerState.from_bytes(newer.value).seen) == 2
    processor.written(newer)
    assert processor.dirty_customers == 0


def test_policy_events_are_counted_by_rule_kind_reason_and_action(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    from schemas.alerts import AlertKind
    from streams import metrics
    from streams.core.outcome import Outcome
    from streams.core.policy import PolicyEvent

    label_calls: list[tuple[str, ...]] = []
    real_labels = metrics.alerts_policy.labels

    def counting_labels(*values: str) -> object:
        label_calls.append(values)
        return real_labels(*values)

    monkeypatch.setattr(metrics.alerts_policy, "labels", counting_labels)
    processor = _processor(_Store())
    labels = {"rule": "friction_spike", "kind": "support", "reason": "cooldown",
              "action": "suppressed"}

    def counted() -> float:
        return REGISTRY.get_sample_value("cx_alerts_policy_total", labels) or 0.0

    before = counted()
    outcome = Outcome(CustomerState())
    outcome.policy_events = [
        PolicyEvent("friction_spike", AlertKind.support, "cooldown", "suppressed", "a-1", NOW),
        PolicyEvent("friction_spike", AlertKind.support, "cooldown", "suppressed", "a-2", NOW),
        PolicyEvent("friction_spike", AlertKind.support, "cap", "suppressed", "a-3", NOW),
    ]
    for _ in range(2):  # the second time through the remembered label set
        assert processor.outputs(outcome, "c-pol", kafka_ts_s=None) == []
    assert counted() - before == 4
    # Six policy events, two label sets: labels() (a lock, a tuple, a dict) at most once each.
    assert len(label_calls) == len(set(label_calls)) <= 2
