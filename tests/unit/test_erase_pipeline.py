"""Erase requests through the scoring pipeline (in-memory tables, recording producer): state,
links (own, and in memory), in-memory indexes, the scores tombstone, no scan of the identity
table, a fresh start."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from schemas.erase import ERASE_HEADER, ERASE_REQUEST_HEADER, ERASE_RESULT_HEADER, EraseRequest
from streams.core.deadletter import parse_dead_letter_headers
from streams.partitioner import customer_partition
from tests.unit.test_pipeline import (
    _TP,
    KEYED,
    PARTITIONS,
    TOPICS,
    _event,
    _fetch,
    _Harness,
    _Record,
)


def _request(subject: str, *, customer: bool = True, request_id: str = "req-1") -> bytes:
    return EraseRequest(request_id=request_id, subject=subject,
                        kind="customer" if customer else "anonymous",
                        requested_at=datetime.now(timezone.utc)).to_json()


def _erase_fetch(subject: str, value: bytes, offset: int = 100) -> dict[_TP, list[_Record]]:
    partition = customer_partition(subject, PARTITIONS)
    return {_TP(KEYED, partition): [_Record(KEYED, partition, offset, subject.encode(), value,
                                            headers=((ERASE_HEADER, b"1"),))]}


def _confirmations(h: _Harness) -> list[tuple[bytes, dict[str, object]]]:
    found: list[tuple[bytes, dict[str, object]]] = []
    for topic, key, value, _partition, headers in h.sent:
        if topic == TOPICS.scores and value is None:
            assert key is not None
            named = dict(headers)
            assert named[ERASE_REQUEST_HEADER] == b"req-1"
            found.append((key, orjson.loads(named[ERASE_RESULT_HEADER])))
    return found


def _seed(h: _Harness, customer: str, anonymous: str) -> None:
    """The anonymous visitor browses (a state of its own), then identifies as the customer."""
    anon_home = customer_partition(anonymous, PARTITIONS)
    home = customer_partition(customer, PARTITIONS)
    h.run(_fetch(TOPICS.touchpoints, anon_home,
                 [(anonymous.encode(), _event(None, 1, anonymous_id=anonymous))]))
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), _event(
        customer, 2, "identify", {}, anonymous_id=anonymous))], first_offset=10))


def test_erasing_a_customer_and_its_anonymous_id_deletes_state_links_indexes_and_scores(
) -> None:
    h = _Harness()
    customer, anonymous = "c-erase", "anon-erase"
    home = customer_partition(customer, PARTITIONS)
    anon_home = customer_partition(anonymous, PARTITIONS)
    _seed(h, customer, anonymous)
    processor = h.pipeline.processor
    assert (home, customer.encode()) in h.states.data
    assert (anon_home, anonymous.encode()) in h.states.data
    assert h.identities.get_any(anonymous.encode()) == customer.encode()
    tracked = len(processor.expiry)

    h.run(_erase_fetch(customer, _request(customer)))

    assert (home, customer.encode()) not in h.states.data
    assert (home, customer.encode(), None) in h.changelog  # state tombstone
    assert len(processor.expiry) == tracked - 1
    assert customer not in processor.deadlines._wake
    # The stored link to the customer is not searched for (no scan of the identity table),
    # and nothing is forwarded: the CLI sends a request per anonymous id it found.
    assert h.identities.get_any(anonymous.encode()) == customer.encode()
    assert _confirmations(h) == [(customer.encode(), {"state_deleted": True,
                                                      "links_deleted": 0})]
    assert not [s for s in h.sent if s[0] == KEYED]
    h.sent.clear()

    h.run(_erase_fetch(anonymous, _request(anonymous, customer=False)))

    assert (anon_home, anonymous.encode()) not in h.states.data  # the visitor's own state
    assert h.identities.get_any(anonymous.encode()) is None  # link tombstone, stored
    assert any(key == anonymous.encode() and value is None for _p, key, value in h.changelog)
    assert _confirmations(h) == [(anonymous.encode(), {"state_deleted": True,
                                                       "links_deleted": 1})]


def test_the_identity_table_is_only_read_by_point_lookups() -> None:
    """The architecture rule: no full scan of state on the event loop. The protocol (and the
    fake) offer no way to iterate the table; an erase reads it by key only, once per id."""
    h = _Harness()
    customer, anonymous = "c-lookup", "anon-lookup"
    _seed(h, customer, anonymous)
    looked_up: list[bytes] = []
    partitions_of = h.identities.partitions_of

    def recording(key: bytes) -> list[int]:
        looked_up.append(key)
        return partitions_of(key)

    h.identities.partitions_of = recording  # type: ignore[method-assign]
    h.run(_erase_fetch(customer, _request(customer)))
    h.run(_erase_fetch(anonymous, _request(anonymous, customer=False), offset=101))
    assert looked_up == [customer.encode(), anonymous.encode()]


def test_erasing_twice_is_harmless_and_a_later_event_starts_a_fresh_state() -> None:
    h = _Harness()
    customer = "c-again"
    home = customer_partition(customer, PARTITIONS)
    h.run(_fetch(TOPICS.touchpoints, home,
                 [(customer.encode(), _event(customer, n)) for n in range(5)]))
    h.run(_erase_fetch(customer, _request(customer, customer=True)))
    h.run(_erase_fetch(customer, _request(customer, customer=True), offset=101))
    assert [result for _key, result in _confirmations(h)] == [
        {"state_deleted": True, "links_deleted": 0},
        {"state_deleted": False, "links_deleted": 0}]
    # A redelivered old event is not a duplicate any more: the dedupe went with the state.
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), _event(customer, 1))],
                 first_offset=50))
    fresh = h.pipeline.processor._load(customer, home)
    assert fresh is not None and len(fresh.seen) == 1


def test_an_erase_in_the_same_fetch_as_the_customers_events_applies_in_order() -> None:
    h = _Harness()
    customer = "c-inline"
    home = customer_partition(customer, PARTITIONS)
    request = _Record(KEYED, home, 3, customer.encode(), _request(customer, customer=True),
                      headers=((ERASE_HEADER, b"1"),))
    before = _Record(KEYED, home, 2, customer.encode(), _event(customer, 1))
    after = _Record(KEYED, home, 4, customer.encode(), _event(customer, 2))
    h.run({_TP(KEYED, home): [before, request, after]})
    state = h.pipeline.processor._load(customer, home)
    assert state is not None and len(state.seen) == 1  # only the event after the erase


def test_a_link_learnt_in_the_same_checkpoint_is_erased_before_it_is_written() -> None:
    h = _Harness()
    customer, anonymous = "c-pending", "anon-pending"
    home = customer_partition(customer, PARTITIONS)
    identify = _Record(KEYED, home, 1, customer.encode(), _event(
        customer, 1, "identify", {}, anonymous_id=anonymous))
    request = _Record(KEYED, home, 2, customer.encode(), _request(customer, customer=True),
                      headers=((ERASE_HEADER, b"1"),))
    h.run({_TP(KEYED, home): [identify, request]})
    assert h.identities.get_any(anonymous.encode()) is None
    assert not any(key == anonymous.encode() and value for _p, key, value in h.changelog)
    assert _confirmations(h)[0][1]["links_deleted"] == 1


def test_an_erase_header_on_the_touchpoints_topic_erases_nothing() -> None:
    h = _Harness()
    customer = "c-publisher"
    home = customer_partition(customer, PARTITIONS)
    h.run(_fetch(TOPICS.touchpoints, home, [(customer.encode(), _event(customer, 1))]))
    forged = {_TP(TOPICS.touchpoints, home): [_Record(
        TOPICS.touchpoints, home, 9, customer.encode(), _request(customer, customer=True),
        headers=((ERASE_HEADER, b"1"),))]}
    h.run(forged)
    assert (home, customer.encode()) in h.states.data
    assert not _confirmations(h)
    assert any(s[0] == TOPICS.dead_letters for s in h.sent)  # not an event either


def test_an_unreadable_erase_request_is_dead_lettered() -> None:
    h = _Harness()
    h.run(_erase_fetch("c-x", b'{"schema_version": 2}'))
    [dead] = [s for s in h.sent if s[0] == TOPICS.dead_letters]
    assert parse_dead_letter_headers(dead[4]).code == "schema_violation"
    assert not _confirmations(h)


def test_the_request_contract_rejects_unknown_versions_and_fields() -> None:
    good = orjson.loads(_request("c-1", customer=True))
    assert EraseRequest.from_json(orjson.dumps(good)).subject == "c-1"
    for bad in ({**good, "schema_version": 2}, {**good, "extra": 1}, {**good, "subject": ""},
                {**good, "cascade": True}):  # the worker never searches for linked ids
        try:
            EraseRequest.from_json(orjson.dumps(bad))
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
