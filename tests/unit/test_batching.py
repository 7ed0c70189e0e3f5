"""Scoring batches (streams.batching) with a dict as the table and in-memory topics: what is
written, handed over and acked, in which order, and what a failure does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from faust.streams import current_event

from streams import batching
from streams.batching import Batches, MappingWriter
from streams.processing import Output, Processor
from tests.journeys import build_engine, cart_abandoned, make_event


@dataclass
class _Message:
    partition: int


@dataclass
class _Event:
    name: str
    message: _Message
    log: list[str]
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        self.log.append(f"ack {self.name}")
        return True


@dataclass
class _Topic:
    name: str
    log: list[str]
    failures: int = 0
    sent: list[tuple[Any, Any, Any]] = field(default_factory=list)

    async def send(self, *, key: Any, value: Any, headers: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.sent.append((key, value, headers))
        self.log.append(f"send {self.name} {value!r}")


class _Table(dict[bytes, bytes]):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.failures = 0
        self.partitions: dict[bytes, int] = {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        event = current_event()  # what Faust's RocksDB store reads the partition from
        assert event is not None
        self.partitions[key] = event.message.partition
        self.log.append(f"write {key.decode()}")
        super().__setitem__(key, value)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "RETRY_FIRST_S", 0.001)


def _setup(max_events: int = 100, max_ms: int = 50) -> tuple[Batches, _Table, dict[str, _Topic],
                                                             list[str]]:
    log: list[str] = []
    table = _Table(log)
    topics = {name: _Topic(name, log) for name in ("alerts_marketing", "alerts_support",
                                                   "scores", "dead_letters", "keyed")}
    async def send(topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]] | None) -> None:
        await topics[topic].send(key=key, value=value, headers=headers)

    batches = Batches(Processor(build_engine()), MappingWriter(table), send,
                      {name: name for name in topics}, max_events=max_events, max_ms=max_ms)
    return batches, table, topics, log


def _score(batches: Batches, event: _Event, customer_id: str, scored: Any) -> None:
    table = batches.writer.table  # type: ignore[attr-defined]
    outcome = batches.processor.process(table, customer_id, scored, anchor=event)
    outputs = [] if outcome is None else batches.processor.outputs(outcome, customer_id,
                                                                   kafka_ts_s=None)
    batches.add(event, outputs)  # type: ignore[arg-type]


def test_flush_writes_each_state_once_then_hands_over_then_acks() -> None:
    batches, table, topics, log = _setup()
    journey = cart_abandoned("c-b")
    events = [_Event(f"m{n}", _Message(partition=3), log) for n in range(len(journey.events))]
    for event, scored in zip(events, journey.events, strict=True):
        _score(batches, event, "c-b", scored)
    other = _Event("dl", _Message(partition=1), log)
    batches.add(other, [Output("dead_letters", b"k", b"raw", [("cx-code", b"x")])])  # type: ignore[arg-type]
    assert len(batches) == len(events) + 1 and not table and not log

    assert asyncio.run(batches.flush()) == len(events) + 1
    assert log[0] == "write c-b" and log.count("write c-b") == 1
    assert table.partitions[b"c-b"] == 3  # the partition of the event that last changed it
    acks = [n for n, line in enumerate(log) if line.startswith("ack")]
    sends = [n for n, line in enumerate(log) if line.startswith("send")]
    assert sends and acks and max(sends) < min(acks)
    assert all(e.acked for e in events) and other.acked
    assert topics["dead_letters"].sent == [(b"k", b"raw", [("cx-code", b"x")])]
    assert len(topics["alerts_marketing"].sent) == 1  # cart_recovery
    assert len(batches) == 0 and current_event() is None


def test_a_failed_send_is_retried_and_nothing_is_acked_before_it_succeeds() -> None:
    batches, _table, topics, log = _setup()
    event = _Event("m0", _Message(partition=0), log)
    batches.add(event, [Output("scores", b"c", b"v1"), Output("scores", b"c", b"v2")])  # type: ignore[arg-type]
    topics["scores"].failures = 3
    assert asyncio.run(batches.flush()) == 1
    assert [v for _k, v, _h in topics["scores"].sent] == [b"v1", b"v2"]  # order kept
    assert log == ["send scores b'v1'", "send scores b'v2'", "ack m0"]


def test_a_failed_state_write_is_retried_before_anything_is_handed_over() -> None:
    batches, table, topics, log = _setup()
    at = datetime.now(timezone.utc)
    for n in range(3):
        event = _Event(f"m{n}", _Message(partition=n), log)
        _score(batches, event, f"c-{n}", make_event(f"c-{n}", f"e-{n}", "page_view", at,
                                                    {"url": "/"}))
    table.failures = 2
    assert asyncio.run(batches.flush()) == 3
    assert sorted(table) == [b"c-0", b"c-1", b"c-2"]
    assert table.partitions == {b"c-0": 0, b"c-1": 1, b"c-2": 2}
    first_send = min(n for n, line in enumerate(log) if not line.startswith("write"))
    assert all(line.startswith("write") for line in log[:first_send])


def test_a_batch_is_due_when_full_or_old() -> None:
    batches, _table, _topics, log = _setup(max_events=2, max_ms=50)
    assert not batches.due()
    batches.add(_Event("m0", _Message(0), log))  # type: ignore[arg-type]
    opened = batches._opened_at
    assert not batches.due(opened + 0.01) and batches.due(opened + 0.06)
    batches.add(_Event("m1", _Message(0), log))  # type: ignore[arg-type]
    assert batches.full and batches.due(opened)
    assert asyncio.run(batches.flush()) == 2 and not batches.due()
    assert asyncio.run(batches.flush()) == 0  # nothing open: nothing to do


def test_a_failed_delivery_is_sent_again_before_the_ack() -> None:
    log: list[str] = []
    table = _Table(log)
    deliveries: list[asyncio.Future[None]] = []
    failures = {"left": 1}

    async def send(topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]] | None) -> asyncio.Future[None]:
        log.append(f"send {value!r}")
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if failures["left"]:
            failures["left"] -= 1
            delivery.set_exception(ConnectionError("not enough replicas"))
        else:
            delivery.set_result(None)
        deliveries.append(delivery)
        return delivery

    batches = Batches(Processor(build_engine()), MappingWriter(table), send,
                      {"scores": "cx.scores"}, max_events=10, max_ms=50)
    event = _Event("m0", _Message(partition=0), log)
    batches.add(event, [Output("scores", b"c", b"v1"), Output("scores", b"c", b"v2")])  # type: ignore[arg-type]
    assert asyncio.run(batches.flush()) == 1
    # v1's delivery failed: it was sent again, and the message acked only after that.
    assert log == ["send b'v1'", "send b'v2'", "send b'v1'", "ack m0"]
    assert len(deliveries) == 3
