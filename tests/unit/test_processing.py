"""The glue between agents and engine, with a plain dict as the table (no broker)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from cxsignals.settings import Settings
from sinks.rows import ALERTS, DEAD_LETTERS, TABLE_COLUMNS, TOUCHPOINT_EVENTS, as_dict
from streams.agents.store import RowBuilder
from streams.core.deadletter import dead_letter_headers
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState
from streams.core.validation import ErrorCode, Invalid
from streams.processing import Processor
from tests.journeys import build_engine, cart_abandoned, make_event


@pytest.fixture
def processor() -> Processor:
    return Processor(build_engine())


def test_process_keeps_the_state_until_flush_then_writes_it_once(processor: Processor) -> None:
    table = _CountingTable()
    journey = cart_abandoned("c-proc")
    anchors: list[int] = []
    outcomes = [processor.process(table, "c-proc", e, anchor=n)
                for n, e in enumerate(journey.events)]
    assert all(o is not None for o in outcomes)
    assert b"c-proc" not in table and processor.dirty_customers == 1
    alerts = [a.rule for o in outcomes if o for a in o.alerts]
    assert alerts == ["cart_recovery"]
    assert processor.flush(table, before_write=anchors.append) == 1
    assert table.writes == 1 and anchors == [len(journey.events) - 1]  # the latest anchor
    assert processor.dirty_customers == 0 and processor.flush(table) == 0
    saved = table[b"c-proc"]
    assert processor.process(table, "c-proc", journey.events[0]) is None  # duplicate
    assert processor.flush(table) == 0 and table[b"c-proc"] == saved


def test_due_customers_come_from_deadlines_and_survive_a_rescan(processor: Processor) -> None:
    table: dict[bytes, bytes] = {}
    at = datetime.now(timezone.utc) - timedelta(minutes=1)
    abandon = make_event("c-due", "c-due:1", "cart_abandon", at,
                         {"cart_id": "k", "cart_value": 250.0, "currency": "EUR"})
    processor.process(table, "c-due", abandon)
    processor.flush(table)
    assert list(processor.due_customers(table, time.time())) == []
    later = time.time() + 3600
    fresh = Processor(processor.engine)  # a restarted worker: rebuilt from the table
    assert list(fresh.due_customers(table, later)) == ["c-due"]
    assert list(fresh.due_customers(table, later)) == []  # returned once
    outcome = fresh.tick(table, "c-due")
    assert outcome is not None


def _record(topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None,
            offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=1, offset=offset, timestamp=0, timestamp_type=0,
                          key=b"k", value=value, checksum=None, serialized_key_size=1,
                          serialized_value_size=len(value), headers=tuple(headers or ()))


def test_row_builder_maps_each_topic_to_its_table() -> None:
    settings = Settings()
    build = RowBuilder(settings, VaderAnalyzer())
    now = datetime.now(timezone.utc)
    event = make_event("c-1", "e-1", "survey_answer", now - timedelta(minutes=5),
                       {"survey": "nps", "score": 2, "comment": "Awful, nobody helped me"})
    [(table, row)] = build(_record(settings.topic_touchpoints,
                                   event.model_dump_json(exclude_none=True).encode()), now)
    assert table == TOUCHPOINT_EVENTS
    values = as_dict(table, row)
    assert values["event_id"] == "e-1" and values["score"] == 2
    assert values["sentiment"] is not None and values["sentiment"] < 0

    [(table, row)] = build(_record(settings.topic_touchpoints, b"{not json"), now)
    assert table == DEAD_LETTERS
    assert as_dict(table, row)["code"] == "invalid_json"
    assert as_dict(table, row)["raw"] == b"{not json"

    foreign = _record(settings.topic_dlq, b"x", dead_letter_headers(
        Invalid(ErrorCode.schema_violation, "f: bad"), topic="t", partition=0, offset=1,
        received_at=now))
    assert build(foreign, now) == []  # stored from cx.touchpoints already
    own = _record(settings.topic_dlq, b"x", dead_letter_headers(
        Invalid(ErrorCode.processing_error, "boom"), topic="t", partition=0, offset=1,
        received_at=now))
    [(table, row)] = build(own, now)
    assert table == DEAD_LETTERS and as_dict(table, row)["code"] == "processing_error"


def test_row_builder_stores_alerts_from_the_alert_topics(processor: Processor) -> None:
    settings = Settings()
    table: dict[bytes, bytes] = {}
    outcomes = [processor.process(table, "c-al", e) for e in cart_abandoned("c-al").events]
    [alert] = [a for outcome in outcomes if outcome is not None for a in outcome.alerts]
    build = RowBuilder(settings, VaderAnalyzer())
    record = _record(settings.topic_alerts_marketing, alert.model_dump_json().encode())
    [(name, row)] = build(record, datetime.now(timezone.utc))
    assert name == ALERTS
    assert as_dict(name, row)["alert_id"] == alert.alert_id
    assert len(row) == len(TABLE_COLUMNS[ALERTS])



class _CountingTable(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.writes = 0
        self.fail_writes = False

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        self.reads += 1
        return super().get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self.fail_writes:
            raise OSError("disk full")
        self.writes += 1
        super().__setitem__(key, value)


def test_state_cache_skips_decoding_and_is_dropped_on_rebalance() -> None:
    processor = Processor(build_engine(), max_cached_states=10)
    table = _CountingTable()
    events = cart_abandoned("c-cache").events
    processor.process(table, "c-cache", events[0])
    processor.flush(table)
    processor.process(table, "c-cache", events[1])
    assert table.reads == 1  # the second event used the cached state
    processor.forget_states()  # a state not flushed yet survives a rebalance ...
    processor.process(table, "c-cache", events[2])
    assert table.reads == 1
    processor.flush(table)
    processor.forget_states()  # ... a flushed one is read again
    processor.process(table, "c-cache", events[3])
    assert table.reads == 2


def test_a_failed_flush_keeps_the_states_for_the_next_one() -> None:
    processor = Processor(build_engine())
    table = _CountingTable()
    at = datetime.now(timezone.utc)
    for n in range(3):
        processor.process(table, f"c-{n}", make_event(f"c-{n}", f"e-{n}", "page_view", at,
                                                      {"url": "/"}))
    table.fail_writes = True
    with pytest.raises(OSError):
        processor.flush(table)
    assert processor.dirty_customers == 3 and not table
    table.fail_writes = False
    assert processor.flush(table) == 3
    assert sorted(table) == [b"c-0", b"c-1", b"c-2"]


class _FailOn:
    """Wraps an engine; raises on one event id (after mutating the state, as a bug might)."""

    def __init__(self, engine: Any, event_id: str) -> None:
        self.engine, self.event_id, self.sentiment = engine, event_id, engine.sentiment

    def process(self, state: Any, customer_id: str, event: Any, *, now: datetime) -> Any:
        outcome = self.engine.process(state, customer_id, event, now=now)
        if event.event_id == self.event_id:
            raise RuntimeError("bug")
        return outcome

    def tick(self, state: Any, customer_id: str, *, now: datetime) -> Any:
        return self.engine.tick(state, customer_id, now=now)


def test_an_engine_failure_mid_batch_rebuilds_the_state_without_the_failed_event() -> None:
    events = cart_abandoned("c-fail").events
    table = _CountingTable()
    failing = Processor(_FailOn(build_engine(), events[2].event_id))  # type: ignore[arg-type]
    failing.process(table, "c-fail", events[0])
    failing.flush(table)
    failing.process(table, "c-fail", events[1])
    with pytest.raises(RuntimeError):
        failing.process(table, "c-fail", events[2])
    failing.flush(table)
    # The same as a worker that never saw events[2]: events 0 and 1 applied, once each.
    clean = Processor(build_engine())
    reference: dict[bytes, bytes] = {}
    clean.process(reference, "c-fail", events[0])
    clean.process(reference, "c-fail", events[1])
    clean.flush(reference)
    rebuilt = CustomerState.from_bytes(table[b"c-fail"])
    expected = CustomerState.from_bytes(reference[b"c-fail"])
    assert rebuilt.seen == expected.seen and len(rebuilt.seen) == 2
    assert rebuilt.score == expected.score and rebuilt.pending_carts == expected.pending_carts
    # events[2] can be replayed later (from the dead-letter topic) and is applied then.
    assert clean.process(reference, "c-fail", events[2]) is not None


def test_state_cache_is_bounded() -> None:
    processor = Processor(build_engine(), max_cached_states=2)
    table = _CountingTable()
    at = datetime.now(timezone.utc)
    for n in range(3):
        processor.process(table, f"c-{n}", make_event(f"c-{n}", f"e-{n}", "page_view", at,
                                                      {"url": "/"}))
    processor.flush(table)
    reads = table.reads
    processor.process(table, "c-0", make_event("c-0", "e-x", "page_view", at, {"url": "/"}))
    assert table.reads == reads + 1  # c-0 was evicted, c-1 and c-2 stayed


def test_a_state_changed_while_its_write_is_under_way_stays_pending() -> None:
    processor = Processor(build_engine())
    table: dict[bytes, bytes] = {}
    at = datetime.now(timezone.utc)
    view = {"url": "/"}
    processor.process(table, "c-w", make_event("c-w", "e-1", "page_view", at, view))
    [write] = processor.pending_writes()
    # The batch awaits the producer; meanwhile the next batch changes the same customer.
    processor.process(table, "c-w", make_event("c-w", "e-2", "page_view", at, view))
    table[b"c-w"] = write.value
    processor.written(write)
    assert processor.dirty_customers == 1  # e-2's change is not lost
    [newer] = processor.pending_writes()
    assert len(CustomerState.from_bytes(newer.value).seen) == 2
    processor.written(newer)
    assert processor.dirty_customers == 0
