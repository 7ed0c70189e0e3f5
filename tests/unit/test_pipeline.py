"""The scoring pipeline on whole fetches, with in-memory tables and a recording producer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.topics import TopicNames
from streams.core.deadletter import parse_dead_letter_headers
from streams.expiry import DAY_S, ExpiryIndex
from streams.partitioner import customer_partition
from streams.pipeline import PipelineLimits, ScoringPipeline
from streams.processing import Processor
from tests.journeys import build_engine, make_event

TOPICS = TopicNames()
KEYED = "app.touchpoints.keyed"
PARTITIONS = 4


@dataclass(frozen=True)
class _TP:
    topic: str
    partition: int


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    timestamp_type: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class _Table:
    log: list[tuple[str, Any]]
    name: str
    data: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    persisted: int = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get((partition, key))

    def get_any(self, key: bytes) -> bytes | None:
        return next((v for (_p, k), v in self.data.items() if k == key), None)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop((partition, key), None)
        else:
            self.data[(partition, key)] = value

    def put_many(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        for key, value in items:
            self.put(partition, key, value)

    def changelog_record(self, partition: int, key: bytes, value: bytes | None) -> Any:
        return _Out(f"{self.name}-changelog", key, value, None, partition)

    def partitions_of(self, key: bytes) -> list[int]:
        return [p for (p, k) in self.data if k == key]

    def delivered(self, delivery: Any) -> None:
        pass

    def persist_offsets(self) -> None:
        self.persisted += 1


@dataclass
class _Out:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Any
    partition: int | None


@dataclass
class _Delivery:
    future: asyncio.Future[None]
    indices: list[int]


def _done() -> asyncio.Future[None]:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class _Harness:
    def __init__(self, **limits: Any) -> None:
        self.log: list[tuple[str, Any]] = []
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None, Any]] = []
        self.acks: list[tuple[str, int, int, int]] = []
        self.changelog: list[tuple[int | None, bytes | None, bytes | None]] = []
        self.states = _Table(self.log, "state")
        self.identities = _Table(self.log, "identity")
        processor = Processor(build_engine(), self.states.get, TOPICS,
                              expiry=ExpiryIndex(400 * DAY_S))
        self.pipeline = ScoringPipeline(
            processor, self.states, self.identities, self.send, self.ack, TOPICS, KEYED,
            PipelineLimits(partitions=PARTITIONS, max_event_bytes=1 << 20,
                           max_future_skew_s=86_400, **limits))
        self.fail_sends = 0

    async def send(self, records: Any) -> list[_Delivery]:
        """One delivery per record (a failed one fails before anything is recorded)."""
        if self.fail_sends:
            self.fail_sends -= 1
            raise ConnectionError("broker away")
        for record in records:
            if record.topic.endswith("-changelog"):
                self.log.append((record.topic.split("-")[0], (record.partition, record.key)))
                self.changelog.append((record.partition, record.key, record.value))
            else:
                self.sent.append((record.topic, record.key, record.value, record.partition,
                                  record.headers))
                self.log.append(("send", record.topic))
        return [_Delivery(_done(), [i]) for i in range(len(records))]

    def ack(self, tp: _TP, first: int, last: int) -> None:
        self.acks.append((tp.topic, tp.partition, first, last))
        self.log.append(("ack", (tp.topic, tp.partition)))

    def run(self, fetch: dict[_TP, list[_Record]]) -> int:
        async def handle_and_drain() -> int:
            handled = await self.pipeline.handle(fetch)
            await self.pipeline.drain()
            return handled

        return asyncio.run(handle_and_drain())


def _event(customer: str | None, n: int, event_type: str = "page_view",
           props: dict[str, Any] | None = None, **envelope: Any) -> bytes:
    at = datetime.now(timezone.utc) - timedelta(minutes=10) + timedelta(seconds=n)
    event = make_event(customer or "x", f"{customer}-{n}", event_type, at,
                       props if props is not None else {"url": "/"}, **envelope)
    if customer is None:
        event = event.model_copy(update={"customer_id": None})
    return event.model_dump_json(exclude_none=True).encode()


def _fetch(topic: str, partition: int, values: Sequence[tuple[bytes | None, bytes | None]],
           first_offset: int = 0) -> dict[_TP, list[_Record]]:
    return {_TP(topic, partition): [_Record(topic, partition, first_offset + i, key, value)
                                    for i, (key, value) in enumerate(values)]}


def test_an_event_on_its_customers_partition_is_scored_in_place() -> None:
    h = _Harness()
    customer = "c-home"
    home = customer_partition(customer, PARTITIONS)
    assert h.run(_fetch(TOPICS.touchpoints, home,
                        [(customer.encode(), _event(customer, n)) for n in range(3)])) == 3
    assert (home, customer.encode()) in h.states.data
    assert all(topic != KEYED for topic, *_ in h.sent)
    assert h.acks == [(TOPICS.touchpoints, home, 0, 2)]


def test_an_event_on_another_partition_is_forwarded_to_its_customers_partition() -> None:
    h = _Harness()
    customer = "c-away"
    home = customer_partition(customer, PARTITIONS)
    away = (home + 1) % PARTITIONS
    value = _event(customer, 1)
    h.run(_fetch(TOPICS.touchpoints, away, [(customer.encode(), value)], first_offset=40))
    assert h.sent == [(KEYED, customer.encode(), value, home, None)]
    assert not h.states.data  # scored only where the state lives
    assert h.acks == [(TOPICS.touchpoints, away, 40, 40)]
    # ... and scored there when it arrives through the keyed topic.
    h.run(_fetch(KEYED, home, [(customer.encode(), value)]))
    assert (home, customer.encode()) in h.states.data


async def _settle() -> None:
    """Let the durable phases (tasks on fake, already delivered sends) run to their end."""
    for _ in range(50):
        await asyncio.sleep(0)


def test_a_checkpoint_writes_a_slice_of_its_states_per_fetch_and_acks_with_the_last() -> None:
    h = _Harness(checkpoint_slice_states=2, checkpoint_s=0.0)
    candidates = (f"c-slice-{i}" for i in range(1000))
    customers = [c for c in candidates if customer_partition(c, PARTITIONS) == 0][:6]
    first = _fetch(TOPICS.touchpoints, 0,
                   [(c.encode(), _event(c, n)) for n, c in enumerate(customers[:5])])
    late = _fetch(TOPICS.touchpoints, 0, [(customers[5].encode(), _event(customers[5], 9))],
                  first_offset=5)

    def stored() -> set[str]:
        return {key.decode() for (_partition, key) in h.states.data}

    async def scenario() -> None:
        pipeline = h.pipeline
        await pipeline.handle(first)  # a checkpoint begins: 5 changed states, 2 per fetch
        await _settle()
        assert stored() == set(customers[:2]) and h.acks == []
        await pipeline.handle(late)  # changed after the checkpoint began: not in it
        await _settle()
        assert stored() == set(customers[:4]) and h.acks == []
        await pipeline.handle({})
        await _settle()
        assert stored() == set(customers[:5])
        assert h.acks == [(TOPICS.touchpoints, 0, 0, 4)]  # with the last slice, not before
        await pipeline.drain()  # everything else at once
        assert stored() == set(customers)
        assert h.acks[1:] == [(TOPICS.touchpoints, 0, 5, 5)]

    asyncio.run(scenario())


def test_drain_writes_a_checkpoint_under_way_at_once() -> None:
    h = _Harness(checkpoint_slice_states=1, checkpoint_s=0.0)
    candidates = (f"c-drain-{i}" for i in range(1000))
    customers = [c for c in candidates if customer_partition(c, PARTITIONS) == 1][:4]
    fetch = _fetch(TOPICS.touchpoints, 1,
                   [(c.encode(), _event(c, n)) for n, c in enumerate(customers)])

    async def scenario() -> None:
        await h.pipeline.handle(fetch)
        await _settle()
        assert len(h.states.data) == 1 and h.acks == []
        await h.pipeline.drain()
        assert len(h.states.data) == 4
        assert h.acks == [(TOPICS.touchpoints, 1, 0, 3)]
        kinds = [kind for kind, _ in h.log]
        assert kinds[-1] == "ack" and kinds.count("ack") == 1

    asyncio.run(scenario())


def test_outputs_are_delivered_before_states_and_acks_come_last() -> None:
    h = _Harness()
    customer = "c-order"
    home = customer_partition(customer, PARTITIONS)
    nps = {"survey": "nps", "score": 1, "comment": "Terrible."}
    h.run(_fetch(TOPICS.touchpoints, home,
                 [(customer.encode(), _event(customer, 1, "survey_answer", nps))]))
    kinds = [kind for kind, _ in h.log]
    assert "send" in kinds and "state" in kinds and kinds[-1] == "ack"
    assert max(i for i, k in enumerate(kinds) if k == "send") < kinds.index("state")
    assert any(topic == TOPICS.alerts_support for topic, *_ in h.sent)
    assert h.states.persisted == 1


def _sent_while_handling(h: _Harness, fetch: dict[_TP, list[_Record]]) -> list[int]:
    """How many records had been sent at each event-loop turn taken while ``handle`` ran."""
    seen: list[int] = []

    async def scenario() -> None:
        handling = True

        async def watch() -> None:
            while handling:
                seen.append(len(h.sent))
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        await h.pipeline.handle(fetch)
        handling = False
        await watcher
        await h.pipeline.drain()

    asyncio.run(scenario())
    return seen


def test_every_customer_is_scored_on_the_partition_the_project_partitioner_gives_it() -> None:
    # customer_partition remembers each partition: the pipeline must route by what it says
    customers = [f"c-{n}-{'x' * (n % 7)}" for n in range(120)] + ["ü-ß", "c 1", ""]
    h = _Harness()
    values = [(c.encode(), _event(c or None, 0, anonymous_id="a-empty") if not c
               else _event(c, 0)) for c in customers]
    assert h.run(_fetch(TOPICS.touchpoints, 0, values)) == len(values)
    forwarded = {key.decode(): p for topic, key, _v, p, _h in h.sent
                 if topic == KEYED and key is not None}
    scored = {key.decode() for (p, key) in h.states.data if p == 0}
    for c in customers[:-1]:
        home = customer_partition(c, PARTITIONS)
        if home == 0:
            assert c in scored and c not in forwarded
        else:
            assert forwarded[c] == home and c not in scored
    # the visitor's events count for its anonymous id, which has a partition of its own
    anonymous_home = customer_partition("a-empty", PARTITIONS)
    assert ("a-empty" in forwarded) == (anonymous_home != 0)
    assert forwarded.get("a-empty", 0) == anonymous_home


def test_a_large_fetch_hands_its_outputs_over_in_parts_while_it_is_scored() -> None:
    customer = "c-large-fetch"
    away = (customer_partition(customer, PARTITIONS) + 1) % PARTITIONS
    values = [(customer.encode(), _event(customer, n)) for n in range(7)]  # 7 forwards
    h = _Harness(yield_every_records=3)
    seen = _sent_while_handling(h, _fetch(TOPICS.touchpoints, away, values))
    # forwards left in parts of three before the fetch was scored to its end (how many parts
    # the watcher saw depends on the loop turns a delivery takes)
    assert 3 in seen and max(seen) in (3, 6)
    assert [value for _topic, _key, value, _p, _h in h.sent] == [v for _k, v in values]
    assert h.acks == [(TOPICS.touchpoints, away, 0, 6)]
    # one part (as before): nothing left before the end of the fetch
    h = _Harness(yield_every_records=1000)
    assert max(_sent_while_handling(h, _fetch(TOPICS.touchpoints, away, values)),
               default=0) == 0
    assert len(h.sent) == 7


def test_a_large_fetch_stores_its_states_after_every_part_of_its_outputs() -> None:
    customer = "c-large-order"
    home = customer_partition(customer, PARTITIONS)
    nps = {"survey": "nps", "score": 1, "comment": "Terrible."}
    values = [(customer.encode(), _event(customer, n, "survey_answer", nps)) for n in range(5)]
    h = _Harness(yield_every_records=2)
    h.run(_fetch(TOPICS.touchpoints, home, values))
    kinds = [kind for kind, _ in h.log]
    assert kinds.count("state") == 1 and kinds[-1] == "ack"
    assert max(i for i, k in enumerate(kinds) if k == "send") < kinds.index("state")


def test_states_go_to_their_own_sender_after_the_outputs_of_their_events() -> None:
    h = _Harness()
    by_sender: list[tuple[str, str]] = []

    async def send_states(records: Any) -> list[_Delivery]:
        by_sender.extend(("states", record.topic) for record in records)
        return await h.send(records)

    async def send_outputs(records: Any) -> list[_Delivery]:
        by_sender.extend(("outputs", record.topic) for record in records)
        return await h.send(records)

    h.pipeline.send, h.pipeline.send_states = send_outputs, send_states
    customer = "c-own-sender"
    home = customer_partition(customer, PARTITIONS)
    nps = {"survey": "nps", "score": 1, "comment": "Terrible."}
    h.run(_fetch(TOPICS.touchpoints, home,
                 [(customer.encode(), _event(customer, 1, "survey_answer", nps))]))
    assert {topic for sender, topic in by_sender if sender == "states"} == {"state-changelog"}
    outputs = [topic for sender, topic in by_sender if sender == "outputs"]
    assert TOPICS.alerts_support in outputs and "state-changelog" not in outputs
    assert by_sender[-1] == ("states", "state-changelog")  # after every output
    assert (home, customer.encode()) in h.states.data


def test_invalid_and_failing_messages_are_dead_lettered_and_the_rest_flows_on() -> None:
    h = _Harness()
    customer = "c-bad"
    home = customer_partition(customer, PARTITIONS)
    values = [(b"k", b"{not json"), (customer.encode(), _event(customer, 1))]
    h.run(_fetch(TOPICS.touchpoints, home, values, first_offset=7))
    [dead] = [s for s in h.sent if s[0] == TOPICS.dead_letters]
    assert dead[1:3] == (b"k", b"{not json")  # byte for byte
    info = parse_dead_letter_headers(dead[4])
    assert info.code == "invalid_json" and info.source_offset == 7
    assert (home, customer.encode()) in h.states.data
    assert h.acks == [(TOPICS.touchpoints, home, 7, 8)]

    class FailingEngine:  # the engine may be compiled: its methods cannot be replaced
        def __init__(self, engine: Any) -> None:
            self._engine = engine

        def __getattr__(self, name: str) -> Any:
            return getattr(self._engine, name)

        def process(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

    processor = h.pipeline.processor
    processor.engine = FailingEngine(processor.engine)
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), _event(customer, 2))], 9))
    [_, failed] = [s for s in h.sent if s[0] == TOPICS.dead_letters]
    assert parse_dead_letter_headers(failed[4]).code == "processing_error"
    assert h.acks[-1] == (TOPICS.touchpoints, home, 9, 9)


def test_a_failed_send_is_retried_and_nothing_is_acked_before_it_succeeds() -> None:
    h = _Harness()
    customer = "c-retry"
    away = (customer_partition(customer, PARTITIONS) + 1) % PARTITIONS
    h.fail_sends = 2
    h.run(_fetch(TOPICS.touchpoints, away, [(customer.encode(), _event(customer, 1))]))
    assert len(h.sent) == 1 and h.acks == [(TOPICS.touchpoints, away, 0, 0)]


def test_an_anonymous_event_follows_its_link_to_the_customers_partition() -> None:
    h = _Harness()
    customer, anonymous = "c-linked", "anon-42"
    home = customer_partition(customer, PARTITIONS)
    identify = _event(customer, 1, "identify", {}, anonymous_id=anonymous)
    anon_event = _event(None, 2, anonymous_id=anonymous)
    anon_partition = customer_partition(anonymous, PARTITIONS)
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), identify)]))
    assert h.identities.get_any(anonymous.encode()) == customer.encode()
    h.run(_fetch(TOPICS.touchpoints, anon_partition, [(anonymous.encode(), anon_event)]))
    forwarded = [s for s in h.sent if s[0] == KEYED]
    if anon_partition == home:
        assert not forwarded  # already where the customer's state is
    else:
        assert forwarded == [(KEYED, customer.encode(), anon_event, home, None)]


def test_a_stored_link_is_looked_up_once_per_fetch_and_again_in_the_next_fetch() -> None:
    """The per-fetch memo of stored links: an anonymous id seen many times in one fetch costs
    one look at the identity store (every partition), and a link stored by another worker
    between two fetches is seen by the next one."""
    h = _Harness()
    customer, anonymous = "c-memo", "anon-memo"
    anon_partition = customer_partition(anonymous, PARTITIONS)
    lookups: list[bytes] = []
    get_any = h.identities.get_any

    def counted(key: bytes) -> bytes | None:
        lookups.append(key)
        return get_any(key)

    h.identities.get_any = counted  # type: ignore[method-assign]
    events = [(anonymous.encode(), _event(None, n, anonymous_id=anonymous)) for n in range(5)]
    h.run(_fetch(TOPICS.touchpoints, anon_partition, events))
    assert lookups == [anonymous.encode()]
    assert not [s for s in h.sent if s[0] == KEYED]  # no link yet: scored as the visitor's
    h.identities.put(0, anonymous.encode(), customer.encode())  # another worker's link
    later = [(anonymous.encode(), _event(None, n, anonymous_id=anonymous)) for n in (5, 6)]
    h.run(_fetch(TOPICS.touchpoints, anon_partition, later, 5))
    assert lookups == [anonymous.encode()] * 2
    if customer_partition(customer, PARTITIONS) != anon_partition:
        assert len([s for s in h.sent if s[0] == KEYED]) == 2


def test_a_customer_inactive_for_the_ttl_is_tombstoned_in_store_and_changelog() -> None:
    h = _Harness()
    customer = "c-ttl"
    home = customer_partition(customer, PARTITIONS)
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), _event(customer, 1))]))
    assert (home, customer.encode()) in h.states.data
    h.pipeline.tick_partitions = lambda: [home]
    outputs: list[Any] = []

    async def expire_and_drain(now: datetime) -> None:
        h.pipeline._ticks(now, outputs)
        await h.pipeline.drain()

    asyncio.run(expire_and_drain(datetime.now(timezone.utc) + timedelta(days=300)))
    assert (home, customer.encode()) in h.states.data  # not stale yet
    # 300 idle days raised the churn risk (time-aware risk): a score update, nothing else
    assert [o.topic for o in outputs] == [TOPICS.scores]
    outputs.clear()
    asyncio.run(expire_and_drain(datetime.now(timezone.utc) + timedelta(days=402)))
    assert (home, customer.encode()) not in h.states.data
    assert h.changelog[-1] == (home, customer.encode(), None)
    assert all(o.topic == TOPICS.scores for o in outputs)  # expiring publishes nothing
