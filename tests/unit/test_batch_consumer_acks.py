"""BatchConsumer never acks a batch-topic record it did not hand to the pipeline, also when a
rebalance happens between the fetch and the hand-over, and a revocation commits only after the
batch in flight is durable (issue 13, item 6).

Faust's own path (``Stream.__aiter__``) turns a message of an older generation, or one read
while the flow is stopped, into ``skipped_value`` and *acks* it: its offset may be committed
although nothing processed it. The batch topics never reach that path: ``_drain_messages``
hands their records to the pipeline (which acks a range only after its outputs and states are
durable, see tests/unit/test_pipeline.py) or drops them un-acked, so the next owner re-reads
them from the committed offset. These tests drive ``BatchConsumer._drain_messages`` and
``on_partitions_revoked`` with a fake consumer around them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from streams.faust_internals import BatchConsumer, ChangelogHoles

SOURCE = TP("it.touchpoints", 0)
CHANGELOG = TP("it-customer-state-changelog", 0)


def _record(tp: TP, offset: int) -> Any:
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, key=b"c",
                           value=b"{}", headers=[], timestamp=0)


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value


def _fake(fetches: list[dict[TP, list[Any]]], *, on_other: Any = None) -> Any:
    """A consumer whose fetches are ``fetches`` (then it stops); the other topics' callback
    runs ``on_other`` (a rebalance can happen there: it yields to the event loop)."""
    stopped = _Flag()
    fake: Any = SimpleNamespace(
        _acked=defaultdict(list), _acked_index=defaultdict(set), _n_acked=0,
        _committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree),
        _next_ack={}, _buffered_partitions=set(), _commit_every=None, fetch_timeout_s=0.1,
        _stopped=stopped, batch_topics=frozenset({SOURCE.topic}), should_stop=False,
        flow_active=True, seeks=0, handled=[], batch_lock=asyncio.Lock(),
        consumer_stopped_errors=(), log=SimpleNamespace(exception=print),
        diag=SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None),
        app=SimpleNamespace(consumer_generation_id=1,
                            monitor=SimpleNamespace(stream_inbound_time={})),
        transport=SimpleNamespace(app=SimpleNamespace(should_stop=False)),
    )
    fake._split = partial(BatchConsumer._split, fake)
    fake.changelog_holes = ChangelogHoles()
    fake._seek_epoch = 0
    fake._mend_changelog_holes = partial(BatchConsumer._mend_changelog_holes, fake)
    fake._finishing = False
    fake.skipped_ranges = partial(BatchConsumer.skipped_ranges, fake)
    fake._seek_back_skipped = partial(BatchConsumer._seek_back_skipped, fake)
    sought: list[tuple[TP, int]] = []
    fake.sought = sought
    # The partitions active when a fetch is split (Faust pauses some in between), and each
    # partition's fetch position: just past its last fetched record unless sought since.
    fake.active = {SOURCE, CHANGELOG}
    positions: dict[TP, int] = {}
    sought_since: dict[TP, int] = {}
    fake.positions, fake.sought_since = positions, sought_since

    async def seek(tp: TP, offset: int) -> None:
        fake.sought.append((tp, offset))

    async def position(tp: TP) -> int | None:
        return fake.sought_since.get(tp, fake.positions.get(tp))

    fake.seek = seek
    fake.position = position
    fake.assignment = lambda: {SOURCE, CHANGELOG}
    fake.ack_range = partial(BatchConsumer.ack_range, fake)
    pending = list(fetches)

    async def wait_next_records(timeout: float) -> tuple[Any, Any]:
        if not pending:
            stopped.value = True
            return None, None
        fetch = pending.pop(0)
        fake.positions.update({tp: recs[-1].offset + 1 for tp, recs in fetch.items() if recs})
        return fetch, fake.active

    async def perform_seek() -> None:
        fake.seeks += 1

    async def callback(message: Any) -> None:
        if on_other is not None:
            await on_other(fake)

    async def wait_first(*coros: Any) -> None:
        await coros[0]
        for coro in coros[1:]:
            coro.close()

    async def handler(fetch: Any) -> None:  # the pipeline, durable at once
        for tp, records in fetch.items():
            fake.handled.extend((tp, r.offset) for r in records)
            fake.ack_range(tp, records[0].offset, records[-1].offset)

    async def never() -> None:
        await asyncio.sleep(3600)

    fake._wait_next_records = wait_next_records
    fake.perform_seek = perform_seek
    fake.callback = callback
    fake.wait_first = wait_first
    fake._to_message = lambda tp, rec: rec
    fake.suspend_flow = SimpleNamespace(wait=never)
    fake.batch_handler = handler
    return fake


def _drain(fake: Any) -> None:
    fetcher = SimpleNamespace(_stopped=_Flag())
    asyncio.run(asyncio.wait_for(BatchConsumer._drain_messages(fake, fetcher), 5))


def _acked(fake: Any) -> dict[TP, list[int]]:
    return {tp: offsets for tp, offsets in fake._acked.items() if offsets}


def test_a_fetch_is_handed_over_whole_and_acked_by_the_handler() -> None:
    fake = _fake([{SOURCE: [_record(SOURCE, o) for o in range(10, 15)]}])
    _drain(fake)
    assert fake.handled == [(SOURCE, o) for o in range(10, 15)]
    assert _acked(fake) == {SOURCE: list(range(10, 15))}


def test_a_rebalance_between_fetch_and_hand_over_acks_nothing_of_the_fetch() -> None:
    """The generation changes while the changelog records of the same fetch are delivered
    (Faust's path awaits there): the source records belong to the next owner now."""

    async def rebalance(fake: Any) -> None:
        fake.app.consumer_generation_id += 1

    fake = _fake([{CHANGELOG: [_record(CHANGELOG, 0)],
                   SOURCE: [_record(SOURCE, o) for o in range(10, 15)]}], on_other=rebalance)
    _drain(fake)
    assert fake.handled == []
    assert _acked(fake) == {}


def test_a_fetch_read_while_the_flow_is_stopped_is_dropped_and_sought_back() -> None:
    fake = _fake([{SOURCE: [_record(SOURCE, o) for o in range(10, 15)]}])
    fake.flow_active = False
    _drain(fake)
    assert fake.handled == [] and _acked(fake) == {}
    assert fake.seeks == 1


def test_records_of_a_partition_no_longer_assigned_are_not_handed_over() -> None:
    other = TP(SOURCE.topic, 1)
    fake = _fake([{SOURCE: [_record(SOURCE, 3)], other: [_record(other, 7)]}])
    _drain(fake)
    assert fake.handled == [(SOURCE, 3)]
    assert set(_acked(fake)) == {SOURCE}


def test_a_revocation_commits_only_after_the_batch_in_flight_is_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler holds the batch lock until its fetch is handed over; the revocation takes
    the lock, drains (waits for every durable phase and its acks), commits, and only then lets
    Faust move the partitions."""
    order: list[str] = []

    async def faust_revoked(self: Any, revoked: set[TP]) -> None:
        order.append("faust-revoke")

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_revoked", faust_revoked)

    async def scenario() -> None:
        consumer = BatchConsumer.__new__(BatchConsumer)
        consumer.batch_lock = asyncio.Lock()
        consumer._next_ack = {SOURCE: 15}
        delivered = asyncio.Event()

        async def drain() -> None:
            await delivered.wait()
            order.append("acked")

        async def commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
            order.append("commit")
            return True

        consumer.batch_drain = drain
        consumer.commit = commit  # type: ignore[method-assign]
        async with consumer.batch_lock:  # a fetch being handed over
            revocation = asyncio.ensure_future(consumer.on_partitions_revoked({SOURCE}))
            await asyncio.sleep(0.05)
            assert order == [] and not revocation.done()
        await asyncio.sleep(0.05)
        assert order == [], "committed before the batch in flight was durable"
        delivered.set()
        await asyncio.wait_for(revocation, 1)
        assert consumer._next_ack == {}

    asyncio.run(scenario())
    assert order == ["acked", "commit", "faust-revoke"]


def test_changelog_records_of_a_partition_paused_since_the_fetch_are_fetched_again() -> None:
    """Seen in test_rebalance: a joining worker's first fetch held standby changelog records
    from offset 0, and Faust paused those partitions before the fetch was split. Left out
    without a seek, the standby copy missed them for good (its persisted offset moved past
    them) and a promotion scored customers from incomplete states."""
    fake = _fake([{CHANGELOG: [_record(CHANGELOG, o) for o in range(0, 284)],
                   SOURCE: [_record(SOURCE, o) for o in range(10, 15)]}])
    fake.active = {SOURCE}
    _drain(fake)
    assert fake.sought == [(CHANGELOG, 0)]
    assert fake.handled == [(SOURCE, o) for o in range(10, 15)]


def test_a_partition_sought_since_the_fetch_is_left_where_the_seek_put_it() -> None:
    """Faust's recovery seeks a standby changelog to its persisted offset: records of an older
    fetch are not sought back over that (it could skip what lies between)."""
    fake = _fake([{CHANGELOG: [_record(CHANGELOG, o) for o in range(300, 310)]}])
    fake.active = {SOURCE}
    fake.sought_since[CHANGELOG] = 120
    _drain(fake)
    assert fake.sought == []


def test_a_partition_revoked_before_its_seek_back_does_not_stop_the_fetch_loop() -> None:
    """The position lookup of a partition revoked meanwhile raises: the loop logs it and goes
    on (its next owner reads from its own position)."""
    fake = _fake([{CHANGELOG: [_record(CHANGELOG, o) for o in range(0, 5)]},
                  {SOURCE: [_record(SOURCE, o) for o in range(10, 12)]}])
    fake.active = {SOURCE}

    async def revoked(tp: TP) -> int:
        raise RuntimeError(f"{tp} is not assigned")

    fake.position = revoked
    _drain(fake)
    assert fake.sought == []
    assert fake.handled == [(SOURCE, 10), (SOURCE, 11)]


# -- holes Faust's flow control cuts into the table changelogs' record stream -------------------

def _event(tp: TP, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


def _with_tables(fake: Any, queued: list[Any], offsets: dict[TP, int | None]) -> Any:
    from collections import deque

    fake.app.tables = SimpleNamespace(
        changelog_queue=SimpleNamespace(_queue=deque(queued)),
        recovery=SimpleNamespace(active_offsets={}, standby_offsets=dict(offsets)))
    return fake


def test_faust_clears_the_changelog_queue_on_resume_and_the_guard_notes_what_it_dropped() -> None:
    """The mechanism itself, with Faust's own queue and flow control: records queued for the
    table but not stored yet are thrown away by ``flow_control.resume()``."""
    import faust

    from streams.faust_internals import guard_changelog_queue

    app = faust.App("holes-test", broker="kafka://127.0.0.1:1")
    holes = ChangelogHoles()
    guard_changelog_queue(app, holes)
    queue = app.tables.changelog_queue  # type: ignore[attr-defined]
    for offset in (41, 42, 43):
        queue.put_nowait(_event(CHANGELOG, offset))
    queue.put_nowait(_event(SOURCE, 7))
    app.flow_control.suspend()
    app.flow_control.resume()
    assert queue.qsize() == 0
    assert holes.first == {CHANGELOG: 41, SOURCE: 7}


def test_a_hole_is_read_again_from_its_start_and_the_tables_offset_lowered() -> None:
    """Records 100..119 fetched; 100..104 dropped from the queue by Faust, 118 still queued,
    and the standby copy already kept 110 (delivered after the clear): the partition is read
    again from 100, the queued record dropped (it comes again), the kept offset lowered to 99."""
    fake = _fake([{SOURCE: [_record(SOURCE, 10)]}])
    other = _event(TP("it-identities-changelog", 0), 5)
    _with_tables(fake, [_event(CHANGELOG, 118), other], {CHANGELOG: 110})
    fake.changelog_holes.first[CHANGELOG] = 100
    fake.positions[CHANGELOG] = 120
    _drain(fake)
    assert fake.sought == [(CHANGELOG, 100)]
    assert fake.app.tables.recovery.standby_offsets == {CHANGELOG: 99}
    assert list(fake.app.tables.changelog_queue._queue) == [other]
    assert fake.changelog_holes.first == {}
    assert fake.handled == [(SOURCE, 10)]


def test_a_hole_behind_a_later_seek_lowers_the_offset_and_never_seeks_forward() -> None:
    """Sought to 90 since (before the hole at 100): reading goes on from 90, nothing is sought,
    and the table keeps records from 90 on."""
    fake = _with_tables(_fake([]), [], {CHANGELOG: 95})
    fake.changelog_holes.first[CHANGELOG] = 100
    fake.positions[CHANGELOG] = 90
    _drain(fake)
    assert fake.sought == []
    assert fake.app.tables.recovery.standby_offsets == {CHANGELOG: 89}


def test_a_hole_is_looked_at_again_when_a_seek_ran_during_its_position_lookup() -> None:
    fake = _with_tables(_fake([{SOURCE: [_record(SOURCE, 10)]}]), [], {CHANGELOG: 110})
    fake.changelog_holes.first[CHANGELOG] = 100
    fake.positions[CHANGELOG] = 120
    looked = []

    async def position_while_faust_seeks(tp: TP) -> int:
        looked.append(tp)
        if len(looked) == 1:
            fake._seek_epoch += 1  # e.g. Recovery seeking its standbys meanwhile
        return 120

    fake.position = position_while_faust_seeks
    _drain(fake)
    assert looked == [CHANGELOG, CHANGELOG]  # once per fetch loop turn: mended on the second
    assert fake.sought == [(CHANGELOG, 100)]


def test_a_hole_of_a_partition_no_longer_assigned_is_left_to_its_next_owner() -> None:
    fake = _with_tables(_fake([]), [], {CHANGELOG: 110})
    fake.changelog_holes.first[CHANGELOG] = 100
    fake.assignment = lambda: {SOURCE}
    _drain(fake)
    assert fake.sought == []
    assert fake.changelog_holes.first == {}
    assert fake.app.tables.recovery.standby_offsets == {CHANGELOG: 110}
