"""The offline recomputation (streams/recompute.py) and ``cxsignals state show``'s rendering:
pure, no broker."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from cxsignals.simulator.journeys import SimConfig, generate
from cxsignals.state_cmd import ChangelogEntry, _text, add_parser, changelog_topic, state_view
from streams.config import WorkerConfig
from streams.core.rule_config import load_rules
from streams.core.state import CustomerState
from streams.recompute import (
    comparable,
    no_deadline_rules,
    recompute,
    state_differences,
)
from tests.journeys import ALL_JOURNEYS, build_engine

NOW = datetime.now(timezone.utc)
CONFIG = WorkerConfig()


def _traffic(events: int = 3000, bad_share: float = 0.01) -> list[bytes]:
    """Simulated messages without those known only by an anonymous id (a redelivery of one
    after its link was learnt is scored twice: tests/unit/test_redelivery_after_link.py)."""
    start = (NOW - timedelta(days=2)).replace(microsecond=0)
    messages = generate(SimConfig(customers=150, seed=7, start=start, total_events=events,
                                  event_gap_s=5.0, bad_share=bad_share))
    return [m.value for m in messages
            if m.is_bad or orjson.loads(m.value).get("customer_id") is not None]


def test_the_scripted_journeys_recompute_to_their_expected_alert_ids() -> None:
    journeys = [build(f"r-{build.__name__}") for build in ALL_JOURNEYS]
    values = [p for j in journeys for p in j.payloads()]
    out = recompute(build_engine(), values, CONFIG, now=NOW)
    expected = {a for j in journeys for a in j.expected_alert_ids().values()}
    assert set(out.alerts) == expected
    assert out.invalid == 0 and out.duplicates == 0
    assert {a["customer_id"] for a in out.alerts.values()} <= set(out.states)
    assert all("emitted_at" not in a for a in out.alerts.values())


def test_redelivered_events_change_nothing() -> None:
    """What the worker relies on after a kill -9: the events since the last checkpoint arrive
    again, and the result is the one of a single pass."""
    values = _traffic()
    once = recompute(build_engine(), values, CONFIG, now=NOW)
    # A crash after 2,000 messages: the last 500 of them are delivered a second time.
    twice = recompute(build_engine(), values[:2000] + values[1500:], CONFIG, now=NOW)
    assert twice.duplicates >= 500 - 2 * once.invalid
    assert twice.alerts == once.alerts and twice.scores == once.scores
    assert set(twice.states) == set(once.states)
    for customer, state in once.states.items():
        assert state_differences(twice.states[customer], state) == []


def test_a_different_order_is_seen_as_a_difference() -> None:
    """The comparison can fail: two customers' states differ in their comparable fields, and an
    event delivered after the customer's later events (beyond the grace period: dropped as
    late) leaves a different state."""
    values = _traffic(bad_share=0.0)
    out = recompute(build_engine(), values, CONFIG, now=NOW)
    a, b = sorted(c for c in out.states if c.startswith("c-"))[:2]
    assert state_differences(out.states[a], out.states[b])
    # The customer whose events span the longest time: the first of them is late once the
    # events more than the grace period after it are in, whatever the time of day the traffic
    # was generated at (a swap of neighbouring events may commute, e.g. two page views).
    by_customer: dict[str, list[tuple[datetime, bytes]]] = {}
    for v in values:
        doc = orjson.loads(v)
        if doc.get("customer_id"):
            by_customer.setdefault(doc["customer_id"], []).append(
                (datetime.fromisoformat(doc["occurred_at"]), v))
    c, mine = max(by_customer.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0])
    first_at = mine[0][0]
    beyond = [v for at, v in mine[1:] if (at - first_at).total_seconds() > CONFIG.grace_s]
    assert beyond, "the traffic spans more than the grace period"
    one_customer = [mine[0][1], *beyond[:11]]
    swapped = one_customer[1:] + one_customer[:1]  # the oldest event now late
    x = recompute(build_engine(), one_customer, CONFIG, now=NOW).states[c]
    y = recompute(build_engine(), swapped, CONFIG, now=NOW).states[c]
    assert state_differences(x, y)


def test_wall_clock_fields_are_not_compared() -> None:
    values = _traffic(500)
    early = recompute(build_engine(), values, CONFIG, now=NOW)
    later = recompute(build_engine(), values, CONFIG, now=NOW + timedelta(hours=3))
    customer = next(iter(early.states))
    assert early.states[customer].lag_s != later.states[customer].lag_s
    assert state_differences(later.states[customer], early.states[customer]) == []
    assert "lag_s" not in comparable(early.states[customer])
    assert early.alerts == later.alerts and early.scores == later.scores


def test_the_rules_without_deadlines_load_and_schedule_no_deadline(tmp_path: object) -> None:
    from pathlib import Path

    path = no_deadline_rules(Path(str(tmp_path)) / "rules.json")
    rules = load_rules(path)
    assert "cart_recovery" not in rules.enabled and rules.policy.quiet_hours is None
    assert set(rules.enabled) == set(load_rules().enabled) - {"cart_recovery"}
    out = recompute(build_engine(rules), _traffic(), CONFIG, now=NOW)
    assert out.alerts
    assert all(s.next_wakeup_s() is None for s in out.states.values())


def test_state_show_renders_every_field_and_event_times() -> None:
    out = recompute(build_engine(), _traffic(500), CONFIG, now=NOW)
    customer, state = next(iter(out.states.items()))
    view = state_view(state)
    assert view["seen_events"] == len(state.seen) and "seen" not in view
    assert view["score"] == state.score
    assert view["watermark_iso"].endswith("Z")
    assert orjson.loads(orjson.dumps(view)) == view  # JSON-ready
    text = _text(customer, ChangelogEntry(state.to_bytes(), 1, 42, 1_700_000_000_000), view)
    assert text.startswith(f"customer {customer}: score {state.score:.2f}")
    assert "partition 1 offset 42" in text
    assert CustomerState.from_bytes(state.to_bytes()) == state


def test_state_show_is_a_cli_command_reading_the_changelog() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["state", "show", "c-1", "--format", "json"])
    assert (args.customer, args.format) == ("c-1", "json")
    assert changelog_topic("cx-signals") == "cx-signals-customer-state-changelog"
    with pytest.raises(SystemExit):
        parser.parse_args(["state", "show"])
