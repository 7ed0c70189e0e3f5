"""Engine behaviour: journeys, redelivery, late and out-of-order events, replay, state size."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
import pytest

from schemas.events import EventBase
from streams.core.engine import Engine, Outcome
from streams.core.state import MAX_SEEN_IDS, STATE_VERSION, CustomerState
from tests.journeys import (
    ALL_JOURNEYS,
    JOURNEY_BASE,
    Journey,
    build_engine,
    make_event,
    promoter_after_purchase,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def run(
    engine: Engine, events: list[EventBase], cid: str = "c1"
) -> tuple[CustomerState, list[Outcome]]:
    state: CustomerState | None = None
    outs = []
    for e in events:
        out = engine.process(state, cid, e, now=NOW)
        state = out.state
        outs.append(out)
    assert state is not None
    return state, outs


def at(minutes: float) -> datetime:
    return JOURNEY_BASE + timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return build_engine()


@pytest.mark.parametrize("builder", ALL_JOURNEYS, ids=lambda b: b.__name__)
def test_journey_produces_exactly_the_expected_alerts(
    engine: Engine, builder: Callable[[str], Journey]
) -> None:
    journey = builder("cust-" + builder.__name__)
    _state, outs = run(engine, journey.events, journey.customer_id)
    alerts = [a for o in outs for a in o.alerts]
    assert [a.rule for a in alerts] == journey.expected_rules
    suppressed = [(p.rule, p.reason) for o in outs for p in o.policy_events]
    assert suppressed == journey.expected_suppressed
    assert {a.rule: a.alert_id for a in alerts} == journey.expected_alert_ids()
    for a in alerts:
        assert a.customer_id == journey.customer_id
        assert a.evidence == journey.evidence[a.rule]
        assert a.action


def test_journey_cart_recovery_alert_carries_cart_context(engine: Engine) -> None:
    journey = ALL_JOURNEYS[0]("cust-ctx")
    _state, outs = run(engine, journey.events, journey.customer_id)
    (alert,) = [a for o in outs for a in o.alerts]
    assert alert.context["cart_id"] == "cart-1"
    assert alert.context["cart_value"] == pytest.approx(89.9)
    assert alert.context["currency"] == "EUR"
    assert alert.event_time == at(35)  # abandon + 30 min, not the time of the later page view
    assert alert.emitted_at == NOW


@pytest.mark.parametrize("builder", ALL_JOURNEYS, ids=lambda b: b.__name__)
def test_redelivering_a_journey_changes_nothing(
    engine: Engine, builder: Callable[[str], Journey]
) -> None:
    journey = builder("cust-redeliver")
    state, _ = run(engine, journey.events, journey.customer_id)
    before = state.to_bytes()
    for e in journey.events:
        out = engine.process(state, journey.customer_id, e, now=NOW + timedelta(hours=1))
        assert out.duplicate and not out.alerts and out.score_update is None
        assert not out.policy_events
    assert state.to_bytes() == before


def test_replay_in_fresh_state_gives_same_scores_and_alert_ids(engine: Engine) -> None:
    events = [e for i, b in enumerate(ALL_JOURNEYS) for e in b(f"cust-replay-{i}").events]
    # one customer living through all journeys, in event-time order
    events.sort(key=lambda e: e.occurred_at)
    _s1, first = run(engine, events, "cust-replay")
    _s2, second = run(build_engine(), events, "cust-replay")

    def summary(outs: list[Outcome]) -> list[object]:
        return [
            (
                [a.alert_id for a in o.alerts],
                o.score_update and (o.score_update.experience_score, o.score_update.churn_risk),
                [(p.rule, p.reason, p.alert_id) for p in o.policy_events],
            )
            for o in outs
        ]

    assert summary(first) == summary(second)
    assert any(o.alerts for o in first)


def _mixed_events(cid: str, n: int, seed: int) -> list[EventBase]:
    rng = random.Random(seed)
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("page_view", {"url": "/p/a", "product_id": "a"}),
        ("page_view", {"url": "/x", "http_status": 503}),
        ("app_error", {"error_code": "E1"}),
        ("purchase", {"order_id": "o", "order_value": 30.0, "currency": "EUR"}),
        ("support_contact", {"contact_id": "t", "reason": "billing", "resolved": False}),
        ("survey_answer", {"survey": "csat", "score": 4}),
        ("checkout_started", {"cart_id": "k"}),
    ]
    out = []
    for i in range(n):
        typ, props = rng.choice(kinds)
        out.append(make_event(cid, f"{cid}-{i}", typ, at(i * 7.0), props))
    return out


def test_out_of_order_within_grace_gives_in_order_scores() -> None:
    events = _mixed_events("c-ooo", 40, seed=3)
    in_order, _ = run(build_engine(), events)
    shuffled = list(events)
    rng = random.Random(5)
    # swap neighbours: each event arrives at most 7 min late, well within the 1 h grace
    for i in range(0, len(shuffled) - 1, 2):
        if rng.random() < 0.7:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    assert shuffled != events
    out_of_order, outs = run(build_engine(), shuffled)
    assert not any(o.late_dropped for o in outs)
    assert out_of_order.score_sum == pytest.approx(in_order.score_sum, rel=1e-9)
    assert out_of_order.score == pytest.approx(in_order.score, rel=1e-9)
    assert out_of_order.risk == pytest.approx(in_order.risk, rel=1e-9)
    assert out_of_order.activity_daily == in_order.activity_daily
    assert out_of_order.errors == in_order.errors
    assert out_of_order.purchases == in_order.purchases
    assert out_of_order.stage == in_order.stage


def test_late_event_within_grace_updates_windows(engine: Engine) -> None:
    state, _ = run(engine, [make_event("c1", "a", "page_view", at(120), {"url": "/"})])
    late = make_event("c1", "b", "app_error", at(120 - 59), {"error_code": "E"})
    out = engine.process(state, "c1", late, now=NOW)
    assert not out.late_dropped and not out.duplicate
    assert [e[1] for e in state.errors] == ["b"]
    assert state.watermark == at(120).timestamp()  # a late event does not move the watermark
    assert state.score < 50


def test_late_event_beyond_grace_is_dropped_and_changes_nothing(engine: Engine) -> None:
    state, _ = run(engine, [make_event("c1", "a", "page_view", at(120), {"url": "/"})])
    before = state.to_bytes()
    late = make_event("c1", "b", "app_error", at(120 - 61), {"error_code": "E"})
    out = engine.process(state, "c1", late, now=NOW)
    assert out.late_dropped and not out.alerts and out.score_update is None
    assert state.to_bytes() == before
    # redelivered: still dropped, still no change
    assert engine.process(state, "c1", late, now=NOW).late_dropped
    assert state.to_bytes() == before


def test_grace_is_configurable() -> None:
    engine = build_engine(grace_s=60.0)
    state, _ = run(engine, [make_event("c1", "a", "page_view", at(10), {"url": "/"})])
    assert engine.process(
        state, "c1", make_event("c1", "b", "page_view", at(8.5), {"url": "/"}), now=NOW
    ).late_dropped
    assert not engine.process(
        state, "c1", make_event("c1", "c", "page_view", at(9.5), {"url": "/"}), now=NOW
    ).late_dropped


def test_state_round_trip_keeps_everything(engine: Engine) -> None:
    events = [e for i, b in enumerate(ALL_JOURNEYS) for e in b(f"c-rt-{i}").events]
    events.sort(key=lambda e: e.occurred_at)
    state, _ = run(engine, events, "c-rt")
    assert len(state.signals) and state.contacts and state.seen and state.stage_seen
    clone = CustomerState.from_bytes(state.to_bytes())
    assert clone == state
    assert clone.to_bytes() == state.to_bytes()


def test_state_round_trip_with_deferred_alert_and_pending_cart() -> None:
    engine = build_engine()
    late_night = datetime(2024, 5, 6, 22, 0, tzinfo=timezone.utc)
    events = [
        make_event(
            "c",
            "a1",
            "cart_abandon",
            late_night,
            {"cart_id": "k", "cart_value": 50.0, "currency": "EUR"},
        ),
        make_event("c", "a2", "page_view", late_night + timedelta(minutes=40), {"url": "/"}),
        make_event(
            "c",
            "a3",
            "cart_abandon",
            late_night + timedelta(minutes=41),
            {"cart_id": "k2", "cart_value": 50.0, "currency": "EUR"},
        ),
    ]
    state, _ = run(engine, events, "c")
    assert state.deferred and state.pending_carts
    assert CustomerState.from_bytes(state.to_bytes()) == state


def test_from_bytes_rejects_unknown_version() -> None:
    fields = msgspec.msgpack.decode(CustomerState().to_bytes())
    assert fields[0] == STATE_VERSION  # the version comes first
    with pytest.raises(ValueError, match="version"):
        CustomerState.from_bytes(_v1_bytes(CustomerState()).replace(b'"v":1', b'"v":99'))
    with pytest.raises(ValueError, match="unsupported"):
        CustomerState.from_bytes(msgspec.msgpack.encode([99, *fields[1:]]))
    # a format-1 state with a field missing, or of the wrong type: ValueError too
    v1 = _v1_bytes(CustomerState())
    with pytest.raises(ValueError, match="format 1"):
        CustomerState.from_bytes(v1.replace(b'"ct":', b'"xx":'))
    with pytest.raises(ValueError, match="format 1"):
        CustomerState.from_bytes(v1.replace(b'"lag":0.0', b'"lag":"soon"'))


def _v1_bytes(st: CustomerState) -> bytes:
    """Format version 1 of a state (orjson, short keys), as engine v1 wrote it."""
    return orjson.dumps(
        {
            "v": 1, "w": st.watermark, "fs": st.first_seen, "lag": st.lag_s, "tz": st.timezone,
            "seg": st.segment, "ids": list(st.seen.items()), "s": st.score_sum,
            "sig": st.signals.records(), "sc": st.score, "rk": st.risk, "st": st.stage,
            "sh": list(st.score_hourly.items()), "ps": st.pub_score, "pr": st.pub_risk,
            "pst": st.pub_stage, "ad": list(st.activity_daily.items()), "ss": st.stage_seen,
            "np": st.purchases, "fp": st.first_purchase, "lp": st.last_purchase,
            "lpi": st.last_purchase_id, "sp": st.spend, "neg": st.last_negative,
            "ct": st.contacts, "er": st.errors, "vw": st.views.records(), "lc": st.last_cart,
            "pc": st.pending_carts, "df": st.deferred, "lf": st.last_fired,
            "dc": st.daily_counts, "lsa": st.last_support_alert,
        }
    )


def test_from_bytes_reads_states_written_by_format_1(engine: Engine) -> None:
    """Deployed changelogs hold version-1 states: they decode to the same state."""
    events = [e for i, b in enumerate(ALL_JOURNEYS) for e in b(f"c-v1-{i}").events]
    events.sort(key=lambda e: e.occurred_at)
    state, _ = run(engine, events, "c-v1")
    assert len(state.signals) and state.contacts and state.deferred == [] and state.seen
    old = _v1_bytes(state)
    decoded = CustomerState.from_bytes(old)
    # Format 1 predates the purchase-day fields: they decode as 0 (the churn scorer then
    # counts purchases instead).
    state.purchase_days, state.first_day_spend = 0, 0.0
    assert decoded == state
    assert decoded.to_bytes() == state.to_bytes()
    assert len(state.to_bytes()) < len(old)  # the new format is no larger


# Documented in docs/scoring.md ("State size"): worst case with 256-character ids everywhere.
MAX_STATE_BYTES = 96 * 1024
MAX_UUID_STATE_BYTES = 40 * 1024
TYPICAL_STATE_BYTES = 16 * 1024


def test_state_size_stays_bounded_under_heavy_traffic() -> None:
    """Thousands of events of every kind, long ids: the encoded state stays under the bound."""
    engine = build_engine()
    state: CustomerState | None = None
    rng = random.Random(11)
    kinds: list[tuple[str, Callable[[int], dict[str, Any]]]] = [
        ("page_view", lambda i: {"url": "/p", "product_id": "p" * 250 + str(i % 7)}),
        ("page_view", lambda i: {"url": "/e", "http_status": 500}),
        ("app_error", lambda i: {"error_code": "E"}),
        ("payment_failed", lambda i: {}),
        (
            "cart_abandon",
            lambda i: {"cart_id": "k" * 250 + str(i), "cart_value": 99.0, "currency": "EUR"},
        ),
        (
            "support_contact",
            lambda i: {"contact_id": "t" * 250 + str(i), "reason": "r" * 250, "resolved": False},
        ),
        ("survey_answer", lambda i: {"survey": "nps", "score": i % 11, "comment": "bad, awful"}),
        ("purchase", lambda i: {"order_id": "o", "order_value": 10.0, "currency": "EUR"}),
    ]
    sizes = []
    minute = 0.0
    late = 0
    for i in range(4000):
        typ, props = rng.choice(kinds)
        minute += rng.choice([0.05, 0.5, 3, 30])  # bursts and gaps: weeks of history
        e = make_event(
            "c", f"{i:0>250}", typ, at(minute), props(i), timezone="Europe/Berlin", segment="s" * 64
        )
        out = engine.process(state, "c", e, now=NOW)
        state = out.state
        late += out.late_dropped
        sizes.append(len(state.to_bytes()))
    assert state is not None
    assert late == 0
    assert len(state.seen) <= MAX_SEEN_IDS
    assert max(sizes) <= MAX_STATE_BYTES, max(sizes)
    print("max state bytes", max(sizes))


def test_typical_state_is_small(engine: Engine) -> None:
    events = _mixed_events("c-typical", 300, seed=1)
    state, _ = run(engine, events, "c-typical")
    assert len(state.to_bytes()) <= TYPICAL_STATE_BYTES


def test_duplicate_ids_are_remembered_for_the_grace_horizon(engine: Engine) -> None:
    # 400 events within 40 minutes: all inside grace, so all remembered (above the 256 floor)
    events = [make_event("c", f"e{i}", "page_view", at(i * 0.1), {"url": "/"}) for i in range(400)]
    state, _ = run(engine, events, "c")
    assert len(state.seen) == 400
    for e in events[:5]:
        assert engine.process(state, "c", e, now=NOW).duplicate


def test_score_update_published_only_on_step_or_stage_change(engine: Engine) -> None:
    state: CustomerState | None = None
    updates = []
    for i in range(6):
        e = make_event("c", f"v{i}", "page_view", at(i), {"url": "/"})
        out = engine.process(state, "c", e, now=NOW)
        state = out.state
        updates.append(out.score_update)
    assert updates[0] is not None  # the first event always publishes
    assert updates[0].previous_stage is None
    assert all(u is None for u in updates[1:])  # nothing moved
    out = engine.process(
        state,
        "c",
        make_event("c", "p", "page_view", at(7), {"url": "/p", "product_id": "x"}),
        now=NOW,
    )
    assert out.score_update is not None
    assert out.score_update.journey_stage.value == "consideration"
    assert out.score_update.previous_stage is not None
    assert out.score_update.previous_stage.value == "awareness"
    out = engine.process(
        out.state,
        "c",
        make_event("c", "s", "survey_answer", at(8), {"survey": "csat", "score": 1}),
        now=NOW,
    )
    assert out.score_update is not None and out.score_update.experience_score < 50 - 2
    assert out.score_update.explanation[0].event_id == "s"
    assert out.score_update.explanation[0].contribution < 0


def test_timezone_and_segment_come_from_the_latest_event_carrying_them(engine: Engine) -> None:
    events = [
        make_event(
            "c", "1", "page_view", at(0), {"url": "/"}, timezone="Europe/Paris", segment="gold"
        ),
        make_event("c", "2", "page_view", at(1), {"url": "/"}),
        make_event("c", "3", "page_view", at(2), {"url": "/"}, timezone="America/New_York"),
        make_event("c", "4", "page_view", at(3), {"url": "/"}, timezone="Not/AZone"),
    ]
    state, _ = run(engine, events, "c")
    assert state.timezone == "America/New_York"
    assert state.segment == "gold"


def test_tick_fires_cart_recovery_for_an_idle_live_customer(engine: Engine) -> None:
    abandon_at = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    e = make_event(
        "c",
        "a",
        "cart_abandon",
        abandon_at,
        {"cart_id": "k", "cart_value": 40.0, "currency": "EUR"},
    )
    out = engine.process(None, "c", e, now=abandon_at + timedelta(seconds=2))
    state = out.state
    assert state.next_wakeup_s() == pytest.approx(
        (abandon_at + timedelta(minutes=30, seconds=2)).timestamp()
    )
    early = engine.tick(state, "c", now=abandon_at + timedelta(minutes=29))
    assert not early.alerts and state.pending_carts
    due = engine.tick(state, "c", now=abandon_at + timedelta(minutes=31))
    assert [a.rule for a in due.alerts] == ["cart_recovery"]
    assert due.alerts[0].event_time == abandon_at + timedelta(minutes=30)
    assert not state.pending_carts and state.next_wakeup_s() is None
    assert not engine.tick(state, "c", now=abandon_at + timedelta(hours=2)).alerts


def test_tick_does_not_overtake_a_replay(engine: Engine) -> None:
    """Old events processed now: the timer waits for the replay's own events."""
    e = make_event(
        "c", "a", "cart_abandon", at(0), {"cart_id": "k", "cart_value": 40.0, "currency": "EUR"}
    )
    state = engine.process(None, "c", e, now=NOW).state
    assert not engine.tick(state, "c", now=NOW + timedelta(minutes=1)).alerts
    buy = make_event(
        "c", "b", "purchase", at(20), {"order_id": "o", "order_value": 40.0, "currency": "EUR"}
    )
    engine.process(state, "c", buy, now=NOW + timedelta(minutes=1))
    assert not engine.tick(state, "c", now=NOW + timedelta(hours=5)).alerts


def test_tick_and_event_give_the_same_alert_id(engine: Engine) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    e = make_event(
        "c", "a", "cart_abandon", t0, {"cart_id": "k", "cart_value": 40.0, "currency": "EUR"}
    )
    s1 = engine.process(None, "c", e, now=t0).state
    by_tick = engine.tick(s1, "c", now=t0 + timedelta(minutes=31)).alerts
    s2 = engine.process(None, "c", e, now=t0).state
    later = make_event("c", "b", "page_view", t0 + timedelta(minutes=31), {"url": "/"})
    by_event = engine.process(s2, "c", later, now=t0 + timedelta(minutes=31)).alerts
    assert [a.alert_id for a in by_tick] == [a.alert_id for a in by_event]
    assert len(by_tick) == 1


def _worst_case_state(big: int = 256) -> CustomerState:
    """Every container at its hard cap, every string at the contract's maximum length."""
    from schemas.alerts import Alert, Contribution
    from streams.core import state as S

    def eid(i: int) -> str:
        return f"{i:0>{big}}"

    t0 = 1.7e9 + 0.123
    alert = Alert(
        alert_id="0" * 36,
        rule="promoter_referral",
        kind="marketing",
        customer_id="c" * big,
        event_time=datetime.fromtimestamp(t0, timezone.utc),
        emitted_at=NOW,
        experience_score=12.34,
        churn_risk=0.1234,
        explanation=[
            Contribution(signal="first_contact_resolution", contribution=-12.34, event_id=eid(i))
            for i in range(5)
        ],
        evidence=[eid(i) for i in range(10)],
        action="Send a cart reminder for cart "
        + "k" * big
        + " (123456.78 EUR), e.g. with free shipping.",
        context={
            "cart_id": "k" * big,
            "cart_value": 123456.78,
            "currency": "EUR",
            "abandoned_at": "2024-05-06T12:00:00.123000+00:00",
            "wait_minutes": 30.0,
            "product_id": "p" * big,
            "views": 32,
            "purchase_event_id": eid(1),
        },
    )
    payload = alert.model_dump(mode="json", exclude={"emitted_at"})
    return CustomerState(
        watermark=t0,
        first_seen=t0,
        lag_s=123456.789,
        timezone="t" * 64,
        segment="s" * 64,
        seen={(1 << 62) + i: int(t0) for i in range(S.MAX_SEEN_IDS)},
        score_sum=-123.456789012345,
        signals=[
            (t0, -12.345678, "first_contact_resolution", eid(i)) for i in range(S.MAX_SIGNALS)
        ],
        score=12.345678901234,
        risk=0.123456789012,
        stage="consideration",
        score_hourly={470000 + i: 12.345678901234 for i in range(26)},
        pub_score=12.345678901234,
        pub_risk=0.123456789012,
        pub_stage="consideration",
        activity_daily={19000 + i: 1234.0 for i in range(36)},
        stage_seen={s: t0 for s in ("awareness", "consideration", "purchase", "usage", "loyalty")},
        purchases=123456,
        first_purchase=t0,
        last_purchase=t0,
        last_purchase_id=eid(0),
        spend=12345678.9,
        last_negative=t0,
        contacts=[(t0, False, eid(i), "t" * big, "r" * big) for i in range(S.MAX_CONTACTS)],
        errors=[(t0, eid(i), "payment_failed") for i in range(S.MAX_ERRORS)],
        views=[(t0, eid(i), (1 << 31) - 1) for i in range(S.MAX_VIEWS)],
        last_cart=t0,
        pending_carts=[
            (t0, t0, eid(i), "k" * big, 123456.78, "EUR") for i in range(S.MAX_PENDING_CARTS)
        ],
        deferred=[(t0, payload) for _ in range(S.MAX_DEFERRED)],
        last_fired={
            r: t0
            for r in (
                "cart_recovery",
                "browse_intent",
                "win_back",
                "promoter_referral",
                "detractor_follow_up",
                "repeat_contact",
                "friction_spike",
                "experience_drop",
                "high_value_at_risk",
            )
        },
        daily_counts={f"{k}:{d}": 3 for k in ("marketing", "support") for d in (19000, 19001)},
        last_support_alert=t0,
    )


@pytest.mark.parametrize(
    ("id_chars", "bound"), [(256, MAX_STATE_BYTES), (36, MAX_UUID_STATE_BYTES)]
)
def test_worst_case_state_size_is_within_the_documented_bound(id_chars: int, bound: int) -> None:
    """All containers full; ids, cart/contact ids and reasons ``id_chars`` long."""
    data = _worst_case_state(id_chars).to_bytes()
    print("worst-case state bytes", id_chars, len(data))
    assert len(data) <= bound
    assert CustomerState.from_bytes(data) == _worst_case_state(id_chars)


def test_an_event_stamped_ahead_of_the_wall_clock_never_makes_the_next_ones_late() -> None:
    """Within the allowed skew an event is scored as if it happened on receipt: one fast clock
    upstream must not push the customer's event-time clock past the wall clock."""
    engine = build_engine(grace_s=60)
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    ahead = make_event("c", "fast-clock", "page_view", now + timedelta(minutes=4), {"url": "/"})
    state = engine.process(None, "c", ahead, now=now).state
    assert state.watermark == now.timestamp()
    on_time = make_event("c", "real", "survey_answer", now + timedelta(seconds=1),
                         {"survey": "nps", "score": 1})
    outcome = engine.process(state, "c", on_time, now=now + timedelta(seconds=2))
    assert not outcome.late_dropped
    assert [a.rule for a in outcome.alerts] == ["detractor_follow_up"]


def test_score_updates_carry_the_customer_value(engine: Engine) -> None:
    events = promoter_after_purchase("c-clv").events
    _state, outs = run(engine, events, "c-clv")
    updates = [o.score_update for o in outs if o.score_update is not None]
    assert updates and all(u.clv_12m is not None for u in updates)
    assert any(u.clv_12m and u.clv_12m > 0 for u in updates)


def test_the_compiled_state_class_keeps_the_wire_format_of_the_struct() -> None:
    """CustomerState became a plain (compiled) class; changelogs written by the msgspec Struct
    it replaced must read back, and its bytes must be the Struct's, field for field."""
    from streams.core.state import STATE_FIELDS
    from streams.core.state_wire import LegacyState

    state = _worst_case_state(36)
    state.first_seen, state.last_cart = 1.5e9, 1.6e9  # distinct values: a field order slip shows
    fields = {name: getattr(state, name) for name in STATE_FIELDS}
    # format 4 is format 2 with the remembered ids, the kept signals and the product views
    # packed: the same bytes otherwise
    packed = LegacyState(**{**fields, "seen": state.seen.wire(), "signals": state.signals.wire(),
                            "views": state.views.wire()})
    assert state.to_bytes() == msgspec.msgpack.encode(
        (STATE_VERSION, *msgspec.structs.astuple(packed)))
    # a format-3 state (ids packed, views as records) reads back as the same state
    format_3 = LegacyState(**{**fields, "seen": state.seen.wire(),
                              "signals": state.signals.records(),
                              "views": state.views.records()})
    format_3_bytes = msgspec.msgpack.encode((3, *msgspec.structs.astuple(format_3)))
    assert CustomerState.from_bytes(format_3_bytes) == state
    assert CustomerState.from_bytes(format_3_bytes).views.records() == state.views.records()
    # a format-2 state (the Struct's bytes, ids as a map, views as records) reads back as the
    # same state
    as_struct = LegacyState(**{**fields, "seen": dict(state.seen.items()),
                               "signals": state.signals.records(),
                               "views": state.views.records()})
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(as_struct))[0] == 2
    assert CustomerState.from_bytes(msgspec.msgpack.encode(as_struct)) == state
    # the records come back as tuples and the floats as floats, as the Struct decoded them
    back = CustomerState.from_bytes(state.to_bytes())
    assert isinstance(back.pending_carts[0], tuple) and isinstance(back.contacts[0], tuple)
    assert back.signals.records() == state.signals.records()
    assert back.deferred[0][1] == state.deferred[0][1]
    assert CustomerState() != state and repr(CustomerState()).startswith("CustomerState(")
