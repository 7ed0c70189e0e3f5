"""Issue 14 item 5 end to end: `cxsignals erase` against the real broker, worker, sink and
ClickHouse removes one person everywhere and keeps everybody else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from cxsignals.state_cmd import changelog_topic, read_changelog
from streams.partitioner import customer_partition
from tests.integration.conftest import (
    Stack,
    WorkerProcess,
    clickhouse_client,
    consume_all,
    publish,
)
from tests.integration.services import wait_until
from tests.journeys import make_event

NPS_DETRACTOR = {"survey": "nps", "score": 1, "comment": "Terrible, never again."}


def _event(customer: str | None, event_id: str, event_type: str, at: datetime,
           props: dict[str, Any] | None = None, **envelope: Any) -> bytes:
    event = make_event(customer or "x", event_id, event_type, at,
                       props if props is not None else {"url": "/"}, **envelope)
    if customer is None:
        event = event.model_copy(update={"customer_id": None})
    return event.model_dump_json(exclude_none=True).encode()


def _person(customer: str, anonymous: str, now: datetime) -> list[tuple[bytes, bytes]]:
    """A visitor browses, identifies, answers a survey badly (a support alert) and buys, in
    two different hours."""
    early, late = now - timedelta(hours=2), now - timedelta(minutes=5)
    return [
        (anonymous.encode(), _event(None, f"{anonymous}-1", "page_view", early,
                                    anonymous_id=anonymous)),
        (customer.encode(), _event(customer, f"{customer}-2", "identify", early, {},
                                   anonymous_id=anonymous)),
        (customer.encode(), _event(customer, f"{customer}-3", "survey_answer", late,
                                   NPS_DETRACTOR)),
        (customer.encode(), _event(customer, f"{customer}-4", "page_view", late)),
    ]


def _stored_state(stack: Stack, customer: str) -> bool:
    """Whether the worker's changelog holds a state of ``customer`` (what `cxsignals state
    show` reads, in process: a subprocess per poll costs seconds)."""
    settings = stack.settings()
    key = customer.encode()
    entries = read_changelog(stack.endpoints.kafka_bootstrap, changelog_topic(settings.app_id),
                             key=key, partitions=[customer_partition(
                                 customer, settings.touchpoint_partitions)])
    return key in entries and entries[key].value is not None


def _count(ch: Any, sql: str) -> int:
    return int(ch.execute(sql)[0][0])


def test_erase_removes_one_person_everywhere_and_keeps_the_other(
    stack: Stack, start_worker: Callable[..., WorkerProcess],
    start_sink: Callable[..., WorkerProcess], cli: Callable[..., Any],
) -> None:
    gone, kept = f"c-gone-{stack.run_id}", f"c-kept-{stack.run_id}"
    gone_anon, kept_anon = f"a-gone-{stack.run_id}", f"a-kept-{stack.run_id}"
    settings = stack.settings()
    bootstrap = stack.endpoints.kafka_bootstrap
    start_worker()
    start_sink()
    now = datetime.now(timezone.utc)
    gone_events, kept_events = _person(gone, gone_anon, now), _person(kept, kept_anon, now)
    # The visitors browse first (scored as their own before they identify).
    publish(bootstrap, settings.topic_touchpoints, [gone_events[0], kept_events[0]])
    for anonymous in (gone_anon, kept_anon):
        wait_until(lambda a=anonymous: _stored_state(stack, a), 30, "the visitor's own state")
    events = gone_events[1:] + kept_events[1:]
    # Invalid input that names each of them: stored in dead_letters with the raw bytes.
    for customer in (gone, kept):
        events.append((customer.encode(), orjson.dumps(
            {"event_type": "no_such_type", "customer_id": customer})))
    publish(bootstrap, settings.topic_touchpoints, events)

    ch = clickhouse_client(stack)
    db = stack.database
    people = f"('{gone}', '{gone_anon}', '{kept}', '{kept_anon}')"
    wait_until(lambda: _count(ch, f"SELECT count() FROM {db}.touchpoint_events") == 8
               and _count(ch, f"SELECT uniqExact(customer_id) FROM {db}.alerts") == 2
               and _count(ch, f"SELECT uniqExact(customer_id) FROM {db}.customer_scores "
                              f"WHERE customer_id IN {people}") >= 2
               and _count(ch, f"SELECT count() FROM {db}.dead_letters") == 2,
               60, "every row of both people in ClickHouse")
    wait_until(lambda: _stored_state(stack, gone), 30,
               "the state of the customer to be checkpointed")

    # One more event just before the erase, not waited for: the erase applies after it, so it
    # neither survives in ClickHouse nor recreates the state.
    last_at = datetime.now(timezone.utc)
    publish(bootstrap, settings.topic_touchpoints, [(gone.encode(), _event(
        gone, f"{gone}-late", "page_view", last_at))])
    # The hours the person touched: two, or three when the test runs in the first minutes of
    # an hour (the "late" events then fall in the previous one).
    hours_touched = len({t.replace(minute=0, second=0, microsecond=0)
                         for t in (now - timedelta(hours=2), now - timedelta(minutes=5),
                                   last_at)})
    done = cli("erase", "--customer", gone, "--format", "json", "--requested-by", "dpo")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    removed = summary["removed"]
    # The visitor's id was found in ClickHouse (the identify event), not by the worker: the
    # CLI sent it a request of its own.
    assert summary["anonymous_ids_found"] == 1
    assert "1 anonymous id(s) stored with the customer" in done.stderr
    assert removed["worker.states"] == 2  # the customer's and the visitor's own
    assert removed["worker.identity_links"] == 1
    assert removed["kafka.score_tombstones"] == 2
    assert removed["clickhouse.touchpoint_events"] == 5
    assert removed["clickhouse.alerts"] >= 1
    assert removed["clickhouse.dead_letters"] == 1
    assert removed["clickhouse.rollup_hours_recomputed"] == hours_touched
    assert "erase [" in done.stderr  # progress on stderr
    assert gone not in done.stdout + done.stderr and gone_anon not in done.stdout + done.stderr

    # Worker: state tombstoned in the changelog, score tombstoned on the compacted topic.
    shown = cli("state", "show", gone)
    assert shown.returncode == 1, shown.stdout
    assert _stored_state(stack, kept)
    scores = consume_all(bootstrap, settings.topic_scores, expect=10**6, timeout_s=1.5)
    assert any(r.key == gone.encode() and r.value is None for r in scores)
    assert not any(r.key == kept.encode() and r.value is None for r in scores)
    links = read_changelog(bootstrap, f"{settings.app_id}-identities-changelog")
    assert links[gone_anon.encode()].value is None  # link tombstone
    assert links[kept_anon.encode()].value == kept.encode()

    # ClickHouse: nothing of the person left, everything of the other kept.
    for table, where in (("touchpoint_events", "customer_id IN {ids} OR anonymous_id IN {ids}"),
                         ("customer_scores", "customer_id IN {ids}"),
                         ("alerts", "customer_id IN {ids}")):
        assert _count(ch, f"SELECT count() FROM {db}.{table} WHERE "
                          + where.format(ids=f"('{gone}', '{gone_anon}')")) == 0, table
        assert _count(ch, f"SELECT count() FROM {db}.{table} WHERE "
                          + where.format(ids=f"('{kept}', '{kept_anon}')")) > 0, table
    dead = f"SELECT count() FROM {db}.dead_letters WHERE position(raw, '{{}}') > 0"
    assert _count(ch, dead.format(gone)) == 0 and _count(ch, dead.format(kept)) == 1
    # The rollup holds exactly what is left (the other person's four events).
    rollup = ch.execute(f"SELECT toUInt32(hour), sum(events) FROM {db}.touchpoint_rollup_hourly "
                        "GROUP BY hour ORDER BY hour")
    # ORDER BY by position is not SQL that ClickHouse 18.16 knows (it sorts by the constant 1).
    base = ch.execute(f"SELECT toUInt32(toStartOfHour(occurred_at)) AS h, count() FROM "
                      f"{db}.touchpoint_events FINAL GROUP BY h ORDER BY h")
    assert rollup == base and sum(n for _h, n in rollup) == 4

    # Audit: one record, counts, no id of the person.
    [audit] = ch.execute(f"SELECT * FROM {db}.erase_audit")
    assert summary["request_id"] in audit and "dpo" in audit and "done" in audit
    assert gone not in repr(audit) and gone_anon not in repr(audit)

    # Erasing again is harmless.
    again = cli("erase", "--customer", gone, "--format", "json")
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["removed"]["clickhouse.touchpoint_events"] == 0
    assert orjson.loads(again.stdout)["removed"]["worker.states"] == 0
    assert orjson.loads(again.stdout)["anonymous_ids_found"] == 0

    # A later event of the same customer starts a fresh state.
    publish(bootstrap, settings.topic_touchpoints,
            [(gone.encode(), _event(gone, f"{gone}-5", "page_view", datetime.now(timezone.utc)))])
    wait_until(lambda: _stored_state(stack, gone), 30, "the fresh state of the erased customer")
    fresh = orjson.loads(cli("state", "show", gone, "--format", "json").stdout)["state"]
    assert fresh["seen_events"] == 1
