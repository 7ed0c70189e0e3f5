"""A redelivery must change nothing, also for an event known only by an anonymous id whose link
to a customer was learnt between its first delivery and the redelivery (a kill -9 after the
checkpoint that stored the link, before Faust committed the offsets; or a rebalance that hands
the partition over from an older commit).

Before the fix, the redelivered event resolved to the linked customer, whose state had never
seen it, so it was scored a second time (it was first scored as the anonymous id's own state):
the customer's counts and score moved, and alerts an uninterrupted run never raises could be
emitted. Found by the offline recomputation (tests/unit/test_recompute.py traffic with
anonymous visitors, replayed from a crash point: one extra alert in 3,000 events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from streams.partitioner import customer_partition
from tests.unit.test_pipeline import KEYED, PARTITIONS, TOPICS, _event, _fetch, _Harness


def test_an_anonymous_event_redelivered_after_its_link_was_learnt_is_not_scored_again() -> None:
    h = _Harness()
    customer = "c-stitched"
    home = customer_partition(customer, PARTITIONS)
    anonymous = next(a for a in (f"anon-{n}" for n in range(100))
                     if customer_partition(a, PARTITIONS) != home)
    away = customer_partition(anonymous, PARTITIONS)
    browse = _event(None, 1, anonymous_id=anonymous)
    identify = _event(customer, 2, "identify", {}, anonymous_id=anonymous)

    h.run(_fetch(TOPICS.touchpoints, away, [(anonymous.encode(), browse)], first_offset=0))
    assert h.states.get(away, anonymous.encode()) is not None  # scored as the visitor's state
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), identify)], first_offset=0))
    assert h.identities.get_any(anonymous.encode()) == customer.encode()

    # The same message again, from the same offset (a crash before the commit).
    h.run(_fetch(TOPICS.touchpoints, away, [(anonymous.encode(), browse)], first_offset=0))
    forwarded = [s for s in h.sent if s[0] == KEYED]
    assert forwarded == [], "the redelivered event was forwarded to be scored for the customer"


def test_a_state_stored_locally_but_not_in_the_changelog_reaches_the_changelog_on_redelivery(
) -> None:
    """kill -9 between the RocksDB put and the changelog acknowledgement: the restarted worker
    must still bring the changelog (what a new owner or a lost disk restores) up to date."""
    import asyncio

    from tests.unit.test_pipeline import _Delivery

    crashed = _Harness()

    async def changelog_never_acknowledged(records: Sequence[Any]) -> list[_Delivery]:
        deliveries = []
        for i, record in enumerate(records):
            fut = asyncio.get_running_loop().create_future()
            if not record.topic.endswith("-changelog"):
                fut.set_result(None)
            deliveries.append(_Delivery(fut, [i]))
        return deliveries

    crashed.pipeline.send = crashed.pipeline.send_states = changelog_never_acknowledged
    customer = "c-crash"
    home = customer_partition(customer, PARTITIONS)
    fetch = _fetch(TOPICS.touchpoints, home, [(customer.encode(), _event(customer, 1))])

    async def until_killed() -> None:
        await crashed.pipeline.handle(fetch)
        await asyncio.wait_for(crashed.pipeline.drain(), 0.5)  # kill -9 while waiting

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(until_killed())
    assert crashed.acks == []  # nothing committed: the event is delivered again

    restarted = _Harness()
    restarted.states.data = dict(crashed.states.data)  # the local RocksDB survived the kill
    restarted.pipeline.processor.read_state = restarted.states.get
    restarted.run(fetch)
    assert restarted.acks, "the redelivered event was not acked at all"
    changelog = [entry for entry in restarted.log if entry[0] == "state"]
    assert changelog == [("state", (home, customer.encode()))], (
        "offsets committed while the changelog lacks the customer's state")
