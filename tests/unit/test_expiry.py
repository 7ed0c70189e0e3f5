"""State TTL: the expiry index and the processor's deletions (no broker, a dict as store)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from schemas.topics import TopicNames
from streams.expiry import DAY_S, ExpiryIndex
from streams.processing import Processor
from tests.journeys import build_engine, make_event
from tests.unit.test_processing import _Store

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)
TTL_DAYS = 30


def _view(customer: str, n: int, at: datetime) -> object:
    return make_event(customer, f"{customer}-{n}", "page_view", at, {"url": "/"})


def test_the_index_counts_each_customer_once_and_hands_out_only_passed_days() -> None:
    index = ExpiryIndex(TTL_DAYS * DAY_S)
    t0 = T0.timestamp()
    index.moved(0, "a", None, t0)
    index.moved(0, "a", t0, t0 + 60)  # same day: nothing moves
    index.moved(0, "b", None, t0)
    index.moved(1, "c", None, t0)
    assert len(index) == 3
    index.moved(0, "a", t0, t0 + 2 * DAY_S)  # active two days later: moves to a later day
    assert len(index) == 3
    stale_b = t0 + TTL_DAYS * DAY_S
    assert index.pop_due(0, stale_b, 10) == []  # b's day has not fully passed yet
    assert index.pop_due(0, stale_b + DAY_S, 10) == ["b"]
    assert len(index) == 2
    assert index.pop_due(0, stale_b + 2 * DAY_S, 10) == []
    assert index.pop_due(0, stale_b + 3 * DAY_S, 10) == ["a"]
    index.drop_partition(1)
    assert len(index) == 0


def test_the_index_pops_at_most_the_limit_and_keeps_the_rest() -> None:
    index = ExpiryIndex(DAY_S)
    for n in range(25):
        index.add(0, f"c{n}", T0.timestamp())
    later = T0.timestamp() + 3 * DAY_S
    first = index.pop_due(0, later, 10)
    rest = index.pop_due(0, later, 100)
    assert len(first) == 10 and len(rest) == 15 and not set(first) & set(rest)
    assert len(index) == 0


def test_a_zero_ttl_keeps_states_for_ever_but_still_counts_them() -> None:
    index = ExpiryIndex(0)
    index.add(0, "a", 0.0)
    assert index.pop_due(0, 1e12, 10) == [] and len(index) == 1


def test_inactive_customers_are_deleted_and_active_ones_kept() -> None:
    store = _Store()
    index = ExpiryIndex(TTL_DAYS * DAY_S)
    processor = Processor(build_engine(), store.get, TopicNames(), expiry=index)
    processor.process("gone", 0, _view("gone", 0, T0), T0)
    processor.process("kept", 0, _view("kept", 0, T0), T0)
    store.write_pending(processor)
    later = T0 + timedelta(days=20)
    processor.process("kept", 0, _view("kept", 1, later), later)
    store.write_pending(processor)
    assert len(index) == 2
    expire_at = T0 + timedelta(days=TTL_DAYS + 1, hours=1)
    due = index.pop_due(0, expire_at.timestamp(), 100)
    assert due == ["gone"]
    assert processor.expire("gone", 0, expire_at) is True
    assert (0, b"gone") in store.data  # deleted only once written
    assert store.write_pending(processor) == 1
    assert (0, b"gone") not in store.data and (0, b"kept") in store.data
    assert len(index) == 1
    # a customer who comes back starts afresh and is tracked again
    back = processor.process("gone", 0, _view("gone", 9, expire_at), expire_at)
    assert back is not None and back.state.first_seen == expire_at.timestamp()
    assert len(index) == 2


def test_a_customer_active_again_before_the_check_is_not_deleted() -> None:
    store = _Store()
    index = ExpiryIndex(TTL_DAYS * DAY_S)
    processor = Processor(build_engine(), store.get, TopicNames(), expiry=index)
    processor.process("c", 0, _view("c", 0, T0), T0)
    store.write_pending(processor)
    # a stale entry for an older day, as a rebuild racing with live events can leave one
    index.add(0, "c", (T0 - timedelta(days=5)).timestamp())
    processor.process("c", 0, _view("c", 1, T0 + timedelta(days=10)), T0 + timedelta(days=10))
    check = T0 + timedelta(days=TTL_DAYS - 3)
    assert "c" in index.pop_due(0, check.timestamp(), 100)
    assert processor.expire("c", 0, check) is False
    assert store.write_pending(processor) == 1 and (0, b"c") in store.data


def test_a_random_population_keeps_exactly_the_customers_seen_within_the_ttl() -> None:
    rng = random.Random(7)
    store = _Store()
    index = ExpiryIndex(TTL_DAYS * DAY_S)
    processor = Processor(build_engine(), store.get, TopicNames(), expiry=index)
    last_seen: dict[str, datetime] = {}
    for n in range(400):
        customer = f"c{rng.randrange(60)}"
        at = T0 + timedelta(days=n * 0.25)
        processor.process(customer, 0, _view(customer, n, at), at)
        last_seen[customer] = at
        for due in index.pop_due(0, at.timestamp(), 1000):
            processor.expire(due, 0, at)
        store.write_pending(processor)
    end = T0 + timedelta(days=100)
    for due in index.pop_due(0, end.timestamp(), 1000):
        processor.expire(due, 0, end)
    store.write_pending(processor)
    # expired within a day after the TTL: nobody kept beyond TTL + 1 day, nobody lost before
    kept = {key.decode() for _, key in store.data}
    assert kept >= {c for c, at in last_seen.items() if end - at < timedelta(days=TTL_DAYS)}
    assert not kept & {c for c, at in last_seen.items()
                       if end - at > timedelta(days=TTL_DAYS + 1)}
    assert len(index) == len(kept)
