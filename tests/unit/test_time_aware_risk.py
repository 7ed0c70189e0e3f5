"""Time-aware churn risk (issue 15 item 2): the wake-up search, the engine's re-evaluation of an
idle customer (score updates, win_back and high_value_at_risk through the policy) and the
processor's scheduling through the deadline index."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from schemas.topics import TopicNames
from streams.core.engine import Engine, Outcome
from streams.core.idle_risk import (
    IDLE_SETTLE_S,
    NEVER,
    SEARCH_BISECTIONS,
    SEARCH_BRACKETS,
    SEARCH_MIN_RESOLUTION_S,
    SEARCH_RESOLUTION,
    first_reaching,
    risk_thresholds,
)
from streams.core.rule_config import DEFAULT_RULES_PATH
from streams.core.rules import load_rules, parse_rules
from streams.core.state import CustomerState
from streams.core.windows import DAY_S
from streams.deadlines import DeadlineIndex
from streams.pipeline import DRAINED_S
from streams.processing import CATCH_UP_RETRY_S, Processor
from streams.recompute import state_differences
from tests.journeys import build_engine, make_event

T0 = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)
MAX_CALLS = 2 + SEARCH_BRACKETS + SEARCH_BISECTIONS


def _rules(cooldowns: dict[str, float] | None = None, quiet_hours: bool = False) -> Any:
    doc = json.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    for rule in doc["rules"]:
        if cooldowns and rule["id"] in cooldowns:
            rule["cooldown_s"] = cooldowns[rule["id"]]
    if not quiet_hours:
        doc["policy"]["quiet_hours"] = None
    return parse_rules(doc)


def _engine(**rules: Any) -> Engine:
    return build_engine(_rules(**rules))


def _buyer(engine: Engine, days: tuple[float, ...] = (0, 20, 40), value: float = 60.0,
           cid: str = "c", start: datetime = T0) -> CustomerState:
    """A customer with a purchase on each of ``days``, then silence."""
    st: CustomerState | None = None
    for i, d in enumerate(days):
        at = start + timedelta(days=d)
        event = make_event(cid, f"{cid}-p{i}", "purchase", at,
                           {"order_id": f"o{i}", "order_value": value, "currency": "EUR"})
        st = engine.process(st, cid, event, now=at).state
    assert st is not None
    return st


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _resolution(wake: float, start: float) -> float:
    return max(SEARCH_MIN_RESOLUTION_S, (wake - start) * SEARCH_RESOLUTION)


# ---------------------------------------------------------------- the search


@pytest.mark.parametrize("crossing_s", [30.0, 2 * 3600.0, 3 * DAY_S, 200 * DAY_S, 399 * DAY_S])
def test_the_search_finds_a_crossing_never_early_within_its_resolution_and_bounded(
    crossing_s: float,
) -> None:
    start, calls = 1_000_000.0, []

    def value_at(t: float) -> float:
        calls.append(t)
        return t - start

    wake = first_reaching(value_at, start, start + 400 * DAY_S, lambda v: v >= crossing_s)
    assert wake is not None
    assert crossing_s <= wake - start <= crossing_s + _resolution(wake, start)
    assert len(calls) <= MAX_CALLS


def test_the_search_says_now_when_reached_and_none_beyond_the_horizon() -> None:
    assert first_reaching(lambda t: t, 10.0, 100.0, lambda v: v >= 5) == 10.0
    assert first_reaching(lambda t: t, 10.0, 100.0, lambda v: v >= 101) is None


def test_thresholds_are_every_enabled_rules_min_churn_risk() -> None:
    assert risk_thresholds(load_rules(None).enabled) == (0.5, 0.6)
    doc = json.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    for rule in doc["rules"]:
        if rule["id"] == "high_value_at_risk":
            rule["enabled"] = False
    assert risk_thresholds(parse_rules(doc).enabled) == (0.6,)


def test_the_wakeup_is_when_the_risk_moved_the_publish_step_from_the_published_risk() -> None:
    engine = _engine()
    st = _buyer(engine)
    w = st.watermark
    assert w is not None and st.pub_risk == st.risk < 0.5
    wake = engine.risk_wakeup_s(st, w)
    assert wake is not None and w < wake < NEVER
    risk = engine._churn_risk
    assert (risk(st, st.score, wake) - st.pub_risk) * 100 > 2.0  # the default step
    assert (risk(st, st.score, wake - _resolution(wake, w)) - st.pub_risk) * 100 <= 2.0


def test_the_wakeup_is_when_the_risk_reaches_the_next_rule_threshold() -> None:
    engine = build_engine(_rules(), score_publish_step=100.0)  # score updates never wake
    st = _buyer(engine)
    w = st.watermark
    assert w is not None
    wake = engine.risk_wakeup_s(st, w)
    assert wake is not None
    risk = engine._churn_risk
    # high_value_at_risk's 0.5 is the next threshold above the current risk
    assert risk(st, st.score, wake - _resolution(wake, w)) < 0.5 <= risk(st, st.score, wake)
    st.risk = risk(st, st.score, wake)
    wake2 = engine.risk_wakeup_s(st, wake)
    assert wake2 is not None  # then win_back's 0.6
    assert risk(st, st.score, wake2 - _resolution(wake2, wake)) < 0.6 <= risk(st, st.score, wake2)


def test_no_wakeup_when_off_or_beyond_the_horizon() -> None:
    assert build_engine(_rules(), idle_risk_horizon_days=0).risk_wakeup_s(
        _buyer(build_engine(_rules())), T0.timestamp()) is None
    short = build_engine(_rules(), idle_risk_horizon_days=1, score_publish_step=100.0)
    st = _buyer(short)
    assert st.watermark is not None
    assert short.risk_wakeup_s(st, st.watermark) == NEVER
    assert st.next_wakeup_s() is None


# ---------------------------------------------------------------- the engine


def _until_alert(engine: Engine, st: CustomerState, rule: str, *, limit_days: float = 400,
                 risks: list[float] | None = None) -> tuple[list[Outcome], list[float]]:
    """Tick ``st`` at each wake-up the search gives (as the worker does) until ``rule``
    fires or is suppressed; returns the outcomes and the tick times (and fills ``risks``
    with the risk before the first tick and after each)."""
    assert st.watermark is not None
    now, outs, times = st.watermark, [], []
    if risks is not None:
        risks.append(st.risk)
    while now < st.watermark + limit_days * DAY_S:
        wake = engine.risk_wakeup_s(st, now)
        assert wake is not None and wake < NEVER
        now = wake
        out = engine.tick(st, "c", now=_dt(now))
        outs.append(out)
        times.append(now)
        if risks is not None:
            risks.append(st.risk)
        if any(a.rule == rule for a in out.alerts) or any(
                p.rule == rule for p in out.policy_events):
            return outs, times
    raise AssertionError(f"{rule} never fired")


def test_a_quiet_customer_gets_rising_score_updates_then_win_back_at_the_crossing() -> None:
    engine = build_engine(_rules(cooldowns={}), score_publish_step=2.0)
    st = _buyer(engine)  # spend 180: high_value_at_risk stays out of it
    last_purchase, w = st.last_purchase, st.watermark
    assert last_purchase is not None and w is not None
    risks: list[float] = []
    outs, times = _until_alert(engine, st, "win_back", risks=risks)
    assert len(outs) > 5 and risks == sorted(risks)
    for before, after, out, t in zip(risks[:-1], risks[1:], outs, times, strict=True):
        # each wake-up has a reason: the publish step, or a rule threshold (0.5, 0.6) crossed
        update = out.score_update
        if update is None:
            assert any(before < threshold <= after for threshold in (0.5, 0.6))
        else:
            assert (after - update.churn_risk) < 1e-4 and update.event_time == _dt(t)
    published = [o.score_update for o in outs if o.score_update is not None]
    assert len(published) >= len(outs) - 2
    assert all(not o.alerts for o in outs[:-1]), "nothing before the crossing"
    (alert,) = outs[-1].alerts
    assert alert.rule == "win_back" and alert.event_time == _dt(times[-1])
    assert alert.evidence == ["c-p2"]  # the last purchase
    assert alert.context["trigger"] == "inactivity"
    assert alert.context["days_since_last_purchase"] == round(
        (times[-1] - last_purchase) / DAY_S, 1)
    assert alert.context["risk_before"] < 0.6 <= alert.context["churn_risk"]
    assert "no purchase for" in alert.action and "no new event" in alert.action
    # at the crossing, not before it: just before the wake-up the risk was below 0.6
    before = times[-1] - _resolution(times[-1], times[-2])
    assert engine._churn_risk(st, st.score, before) < 0.6


def test_win_back_is_not_raised_before_the_crossing_and_raised_once() -> None:
    engine = _engine()
    st = _buyer(engine)
    probe = st.copy()
    _outs, times = _until_alert(engine, probe, "win_back")
    crossing = times[-1]
    early = engine.tick(st, "c", now=_dt(crossing - 2 * DAY_S))
    assert not early.alerts and st.risk < 0.6
    on_time = engine.tick(st, "c", now=_dt(crossing))
    assert [a.rule for a in on_time.alerts] == ["win_back"]
    later = engine.tick(st, "c", now=_dt(crossing + 30 * DAY_S))
    assert not later.alerts and not later.policy_events  # risk stays above: no new crossing


def test_the_idle_alert_id_is_the_same_whenever_the_tick_runs() -> None:
    """A crash between the tick and the checkpoint re-runs it later: the same alert id."""
    engine = _engine()
    st = _buyer(engine)
    _outs, times = _until_alert(engine, st.copy(), "win_back")
    ids = {engine.tick(st.copy(), "c", now=_dt(times[-1] + delay)).alerts[0].alert_id
           for delay in (0, 60, 3 * DAY_S)}
    assert len(ids) == 1


def test_the_win_back_cooldown_holds_for_idle_crossings() -> None:
    engine = _engine(cooldowns={"win_back": 200 * DAY_S})
    st = _buyer(engine)
    outs, times = _until_alert(engine, st, "win_back")
    assert [a.rule for a in outs[-1].alerts] == ["win_back"]
    first = times[-1]
    # buys again (the risk falls back), then goes quiet again: a second crossing within
    # the cooldown is suppressed, a third after it fires
    comeback = _dt(first + DAY_S)
    event = make_event("c", "c-p3", "purchase", comeback,
                       {"order_id": "o3", "order_value": 60.0, "currency": "EUR"})
    st = engine.process(st, "c", event, now=comeback).state
    assert st.risk < 0.6
    outs, times = _until_alert(engine, st, "win_back")
    assert times[-1] - first < 200 * DAY_S
    assert not outs[-1].alerts
    assert [(p.rule, p.reason) for p in outs[-1].policy_events] == [("win_back", "cooldown")]
    comeback = _dt(first + 210 * DAY_S)
    event = make_event("c", "c-p4", "purchase", comeback,
                       {"order_id": "o4", "order_value": 60.0, "currency": "EUR"})
    st = engine.process(st, "c", event, now=comeback).state
    outs, times = _until_alert(engine, st, "win_back")
    assert [a.rule for a in outs[-1].alerts] == ["win_back"]
    assert outs[-1].alerts[0].evidence == ["c-p4"]


def test_an_idle_win_back_in_quiet_hours_is_deferred_to_the_morning() -> None:
    engine = _engine(quiet_hours=True)
    st = _buyer(engine)
    _outs, times = _until_alert(engine, st.copy(), "win_back")
    night = _dt(times[-1]).replace(hour=23, minute=0, second=0)  # the customer's zone: UTC
    if night.timestamp() < times[-1]:
        night += timedelta(days=1)
    out = engine.tick(st, "c", now=night)
    assert not out.alerts
    assert [(p.rule, p.reason, p.action) for p in out.policy_events] == [
        ("win_back", "quiet_hours", "deferred")]
    morning = (night + timedelta(days=1)).replace(hour=8)
    assert st.next_due() == morning.timestamp()
    released = engine.tick(st, "c", now=morning)
    assert [a.rule for a in released.alerts] == ["win_back"]


def test_a_high_value_customer_going_quiet_raises_high_value_at_risk() -> None:
    engine = _engine()
    st = _buyer(engine, value=250.0)  # spend 750 >= 500
    outs, times = _until_alert(engine, st, "high_value_at_risk")
    (alert,) = outs[-1].alerts
    assert alert.kind.value == "support"
    assert alert.context["trigger"] == "inactivity"
    assert alert.context["risk_before"] < 0.5 <= alert.context["churn_risk"]
    assert alert.context["lifetime_spend"] == 750.0
    assert "without activity" in alert.action
    assert all(not o.alerts for o in outs[:-1])


def test_idle_reevaluation_off_leaves_ticks_as_they_were() -> None:
    engine = build_engine(_rules(), idle_risk_horizon_days=0)
    st = _buyer(engine)
    assert st.watermark is not None
    risk = st.risk
    out = engine.tick(st, "c", now=_dt(st.watermark + 300 * DAY_S))
    assert out.score_update is None and not out.alerts and st.risk == risk


# ---------------------------------------------------------------- the processor


class _Store(dict[tuple[int, bytes], bytes]):
    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.get((partition, key))

    def write_pending(self, processor: Processor, now_s: float) -> None:
        for write in processor.pending_writes(now_s):
            assert write.value is not None
            self[(write.partition, write.customer_id.encode())] = write.value
            processor.written(write)


def test_the_worker_path_backdated_purchases_then_win_back_through_the_deadline_index() -> None:
    engine = _engine()
    store, deadlines = _Store(), DeadlineIndex()
    processor = Processor(engine, store.read, TopicNames(), deadlines=deadlines)
    now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    # purchases 200, 180 and 160 days ago: quiet for 160 days, risk as of now >= 0.6
    for i, ago in enumerate((200, 180, 160)):
        at = now - timedelta(days=ago)
        event = make_event("c", f"c-p{i}", "purchase", at,
                           {"order_id": f"o{i}", "order_value": 60.0, "currency": "EUR"})
        outcome = processor.process("c", 0, event, now)
        assert outcome is not None and not outcome.alerts
    assert outcome is not None and outcome.score_update is not None
    assert outcome.score_update.churn_risk < 0.6
    assert deadlines.pop_due(0, now.timestamp() + 10 * DAY_S, 10) == []  # nothing yet
    store.write_pending(processor, now.timestamp())  # the checkpoint schedules a first look
    assert deadlines.pop_due(0, now.timestamp(), 10) == ["c"]  # at once: the risk is high
    out = processor.tick("c", 0, now)
    assert out is not None and [a.rule for a in out.alerts] == ["win_back"]
    assert out.score_update is not None and out.score_update.churn_risk >= 0.6
    assert out.score_update.event_time == now
    state = out.state
    assert state.risk_wake_s is not None and state.risk_wake_s > now.timestamp()
    store.write_pending(processor, now.timestamp())
    stored = CustomerState.from_bytes(store[(0, b"c")])
    assert stored.risk_wake_s == state.risk_wake_s  # a rebuilt index needs no search
    assert stored.next_wakeup_s() == state.risk_wake_s


def test_a_live_customer_is_looked_at_once_settled_and_each_event_clears_the_schedule() -> None:
    engine = _engine()
    store, deadlines = _Store(), DeadlineIndex()
    processor = Processor(engine, store.read, TopicNames(), deadlines=deadlines)
    now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    event = make_event("c", "c-p0", "purchase", now,
                       {"order_id": "o0", "order_value": 60.0, "currency": "EUR"})
    processor.process("c", 0, event, now)
    store.write_pending(processor, now.timestamp())
    state = CustomerState.from_bytes(store[(0, b"c")])
    assert state.risk_wake_s == now.timestamp() + IDLE_SETTLE_S
    assert deadlines.pop_due(0, now.timestamp() + IDLE_SETTLE_S - 1, 10) == []
    later = now + timedelta(minutes=1)
    view = make_event("c", "c-v0", "page_view", later, {"url": "/"})
    outcome = processor.process("c", 0, view, later)
    assert outcome is not None and outcome.state.risk_wake_s is None
    store.write_pending(processor, later.timestamp())
    settled = later.timestamp() + IDLE_SETTLE_S
    assert deadlines.pop_due(0, settled - 1, 10) == []
    assert deadlines.pop_due(0, settled, 10) == ["c"]
    processor.tick("c", 0, _dt(settled))
    # after the look: the search's answer, when the risk moves the publish step
    wake = processor._states["c"].risk_wake_s
    assert wake is not None and settled + DAY_S < wake < NEVER


def test_the_schedule_is_stored_but_not_compared_and_old_states_decode() -> None:
    engine = _engine()
    st = _buyer(engine)
    other = st.copy()
    other.risk_wake_s = 123.0
    assert state_differences(other, st) == []
    # a state written before the field existed (one element shorter; format 2, where the
    # remembered ids were a map, the signals and product views records) decodes with None
    raw = msgspec.msgpack.decode(st.to_bytes())
    raw[0], raw[6] = 2, dict(st.seen.items())
    raw[8], raw[26] = st.signals.records(), st.views.records()
    older = CustomerState.from_bytes(msgspec.msgpack.encode(raw[:-1]))
    assert older.risk_wake_s is None and older.watermark == st.watermark
    never = st.copy()
    never.risk_wake_s = NEVER
    assert CustomerState.from_bytes(never.to_bytes()).next_wakeup_s() is None


def test_a_look_due_while_the_partition_catches_up_waits_without_changing_the_state() -> None:
    engine = _engine()
    store, deadlines = _Store(), DeadlineIndex()
    processor = Processor(engine, store.read, TopicNames(), deadlines=deadlines)
    now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    for i, ago in enumerate((200, 180, 160)):
        at = now - timedelta(days=ago)
        processor.process("c", 0, make_event("c", f"c-p{i}", "purchase", at, {
            "order_id": f"o{i}", "order_value": 60.0, "currency": "EUR"}), now)
    store.write_pending(processor, now.timestamp())
    assert deadlines.pop_due(0, now.timestamp(), 10) == ["c"]
    # A backlog: later events of this customer may still come. Nothing is judged, nothing
    # is written; the look is retried shortly.
    assert processor.tick("c", 0, now, live=False) is None
    assert processor.dirty_customers == 0
    retry = now.timestamp() + CATCH_UP_RETRY_S
    assert deadlines.pop_due(0, retry - 1, 10) == []
    assert deadlines.pop_due(0, retry, 10) == ["c"]
    out = processor.tick("c", 0, _dt(retry), live=True)
    assert out is not None and [a.rule for a in out.alerts] == ["win_back"]


def test_a_partition_is_live_when_its_latest_event_is_current_or_it_drained() -> None:
    from streams.partitioner import customer_partition
    from tests.unit.test_pipeline import PARTITIONS, TOPICS, _fetch, _Harness

    h = _Harness()
    home = customer_partition("c-live", PARTITIONS)
    other = next(c for c in (f"c-old-{n}" for n in range(100))
                 if customer_partition(c, PARTITIONS) == home)
    now_s = datetime.now(timezone.utc).timestamp()
    assert not h.pipeline.is_live(home, now_s)  # not heard of: wait until it drained
    assert h.pipeline.is_live(home, now_s + DRAINED_S)

    def one(customer: str, at: datetime) -> dict[Any, Any]:
        event = make_event(customer, f"{customer}-{at.timestamp()}", "page_view", at,
                           {"url": "/"})
        return _fetch(TOPICS.touchpoints, home, [(customer.encode(),
                                                  event.model_dump_json().encode())])

    h.run(one("c-live", datetime.now(timezone.utc) - timedelta(seconds=10)))
    now_s = datetime.now(timezone.utc).timestamp()
    assert h.pipeline.is_live(home, now_s)
    h.run(one(other, datetime.now(timezone.utc) - timedelta(days=160)))  # a backfill
    now_s = datetime.now(timezone.utc).timestamp()
    assert not h.pipeline.is_live(home, now_s)
    assert h.pipeline.is_live(home, now_s + DRAINED_S)


def test_a_rebuilt_index_uses_the_stored_schedule_or_gives_an_old_state_a_first_look() -> None:
    engine = _engine()
    processor = Processor(engine, lambda partition, key: None, TopicNames())
    now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    st = _buyer(engine, start=now - timedelta(days=200))  # last purchase 160 days ago
    scheduled = st.copy()
    scheduled.risk_wake_s = now.timestamp() + DAY_S
    assert processor.stored_wakeup_s(scheduled, now.timestamp()) == now.timestamp() + DAY_S
    # written before time-aware risk (no schedule): looked at once the index is rebuilt
    assert st.risk_wake_s is None
    assert processor.stored_wakeup_s(st, now.timestamp()) == now.timestamp()
    off = Processor(build_engine(_rules(), idle_risk_horizon_days=0), lambda p, k: None,
                    TopicNames())
    assert off.stored_wakeup_s(_buyer(engine, start=now - timedelta(days=200)),
                               now.timestamp()) is None
