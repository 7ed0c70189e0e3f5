"""Alert policy: cooldown, daily cap, quiet hours (deferred then released), suppression."""

from __future__ import annotations

import copy
import json
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.events import EventBase
from streams.core.engine import Engine, EngineConfig, Outcome
from streams.core.policy import quiet_release, zone
from streams.core.rules import DEFAULT_RULES_PATH, QuietHours, parse_rules
from streams.core.state import CustomerState
from tests.journeys import make_event
from tests.unit.test_rules import FixedSentiment

DEFAULT_DOC: dict[str, Any] = json.loads(DEFAULT_RULES_PATH.read_text())
NOON = datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc)  # a Monday
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def engine(cooldowns: dict[str, float] | None = None, **policy: Any) -> Engine:
    doc = copy.deepcopy(DEFAULT_DOC)
    for rule in doc["rules"]:
        if cooldowns and rule["id"] in cooldowns:
            rule["cooldown_s"] = cooldowns[rule["id"]]
    doc["policy"].update(policy)
    return Engine(EngineConfig(), parse_rules(doc), FixedSentiment(0.0))


class Run:
    """Feeds events of one customer and collects alerts and policy events."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.state: CustomerState | None = None
        self.n = 0
        self.outs: list[Outcome] = []

    def send(
        self, typ: str, when: datetime, props: dict[str, Any] | None = None, **kw: Any
    ) -> Outcome:
        self.n += 1
        e: EventBase = make_event("c", f"e{self.n}", typ, when, props, **kw)
        out = self.eng.process(self.state, "c", e, now=NOW)
        self.state = out.state
        self.outs.append(out)
        return out

    def abandon(self, when: datetime, **kw: Any) -> Outcome:
        return self.send(
            "cart_abandon",
            when,
            {"cart_id": f"k{self.n}", "cart_value": 50.0, "currency": "EUR"},
            **kw,
        )

    def view(self, when: datetime, **kw: Any) -> Outcome:
        return self.send("page_view", when, {"url": "/"}, **kw)

    @property
    def rules(self) -> list[str]:
        """Alerts that passed the policy: sent or withheld as control alerts (the policy
        treats both as sent)."""
        return [a.rule for o in self.outs for a in (*o.alerts, *o.control_alerts)]

    @property
    def policy(self) -> list[tuple[str, str, str]]:
        return [(p.rule, p.reason, p.action) for o in self.outs for p in o.policy_events]


def minutes(m: float, base: datetime = NOON) -> datetime:
    return base + timedelta(minutes=m)


# ------------------------------------------------------------------ cooldown


def test_cooldown_suppresses_the_same_rule_for_the_same_customer() -> None:
    r = Run(engine())  # cart_recovery cooldown 6 h
    r.abandon(minutes(0))
    r.view(minutes(31))
    r.abandon(minutes(60))
    r.view(minutes(91))
    assert r.rules == ["cart_recovery"]
    assert r.policy == [("cart_recovery", "cooldown", "suppressed")]
    r.abandon(minutes(30 + 6 * 60))  # its deadline is 6 h after the first alert
    r.view(minutes(61 + 6 * 60))
    assert r.rules == ["cart_recovery", "cart_recovery"]


def test_cooldown_is_per_rule_and_configurable() -> None:
    r = Run(engine({"cart_recovery": 0}))
    for start in (0, 40, 80):
        r.abandon(minutes(start))
    r.view(minutes(200))
    assert r.rules == ["cart_recovery", "cart_recovery"]  # third one hits the daily cap of 2
    assert r.policy == [("cart_recovery", "cap", "suppressed")]


def test_a_suppressed_candidate_reports_the_id_and_time_its_alert_would_have_had() -> None:
    # Its id and time are computed only when read: the same as the alert's without a cooldown.
    suppressed, sent = Run(engine()), Run(engine({"cart_recovery": 0}))
    for r in (suppressed, sent):
        r.abandon(minutes(0))
        r.abandon(minutes(40))
        r.view(minutes(100))
    second = [a for o in sent.outs for a in o.alerts][1]
    [event] = [p for o in suppressed.outs for p in o.policy_events]
    assert (event.rule, event.reason, event.action) == ("cart_recovery", "cooldown", "suppressed")
    assert event.alert_id == second.alert_id
    assert event.event_time == second.event_time
    assert repr(event).endswith(f"{second.alert_id!r}, {second.event_time!r})")


# ------------------------------------------------------------------ daily cap


def test_daily_cap_per_kind_resets_on_the_next_utc_day() -> None:
    r = Run(engine({"cart_recovery": 0}, daily_cap={"marketing": 1, "support": 3}))
    r.abandon(minutes(0))
    r.abandon(minutes(40))
    r.view(minutes(100))
    assert r.rules == ["cart_recovery"]
    assert r.policy == [("cart_recovery", "cap", "suppressed")]
    next_day = NOON + timedelta(days=1)
    r.abandon(next_day)
    r.view(minutes(31, next_day))
    assert r.rules == ["cart_recovery", "cart_recovery"]


def test_daily_cap_counts_kinds_separately() -> None:
    r = Run(engine(daily_cap={"marketing": 2, "support": 1}))
    r.send("survey_answer", minutes(0), {"survey": "csat", "score": 1})  # support alert 1
    for i, m in enumerate((10, 20, 30)):  # three errors: friction_spike is support too
        r.send("app_error", minutes(m), {"error_code": f"E{i}"})
    assert r.rules == ["detractor_follow_up"]
    assert ("friction_spike", "cap", "suppressed") in r.policy


# ------------------------------------------------------------------ quiet hours


def test_marketing_in_quiet_hours_is_deferred_then_released_by_a_later_event() -> None:
    r = Run(engine())
    evening = datetime(2024, 5, 6, 20, 0, tzinfo=timezone.utc)  # 22:00 in Berlin (CEST)
    r.abandon(evening, timezone="Europe/Berlin")
    r.view(minutes(31, evening))
    assert r.rules == []
    assert r.policy == [("cart_recovery", "quiet_hours", "deferred")]
    assert r.state is not None and len(r.state.deferred) == 1
    r.view(datetime(2024, 5, 7, 5, 59, tzinfo=timezone.utc))  # 07:59 Berlin
    assert r.rules == []
    out = r.view(datetime(2024, 5, 7, 6, 0, tzinfo=timezone.utc))  # 08:00 Berlin
    assert [a.rule for a in out.alerts] == ["cart_recovery"]
    alert = out.alerts[0]
    assert alert.event_time == minutes(30, evening)  # the original time, not the release
    assert alert.emitted_at == NOW
    assert not r.state.deferred


def test_deferred_alert_is_released_by_tick() -> None:
    eng = engine()
    evening = datetime(2026, 3, 2, 21, 30, tzinfo=timezone.utc)  # UTC customer, live traffic
    e = make_event(
        "c", "a", "cart_abandon", evening, {"cart_id": "k", "cart_value": 50.0, "currency": "EUR"}
    )
    state = eng.process(None, "c", e, now=evening).state
    t1 = eng.tick(state, "c", now=minutes(31, evening))
    assert [p.reason for p in t1.policy_events] == ["quiet_hours"] and not t1.alerts
    morning = datetime(2026, 3, 3, 8, 0, tzinfo=timezone.utc)
    assert state.next_wakeup_s() == pytest.approx(morning.timestamp())
    assert not eng.tick(state, "c", now=morning - timedelta(seconds=1)).alerts
    released = eng.tick(state, "c", now=morning)
    assert [a.rule for a in released.alerts] == ["cart_recovery"]
    assert released.alerts[0].alert_id == t1.policy_events[0].alert_id


def test_quiet_hours_do_not_delay_support_alerts() -> None:
    r = Run(engine())
    r.send(
        "survey_answer",
        datetime(2024, 5, 6, 23, 0, tzinfo=timezone.utc),
        {"survey": "nps", "score": 1},
    )
    assert r.rules == ["detractor_follow_up"]


def test_deferred_marketing_is_suppressed_if_the_customer_turns_angry_overnight() -> None:
    r = Run(engine())
    evening = datetime(2024, 5, 6, 22, 0, tzinfo=timezone.utc)
    r.abandon(evening)
    r.view(minutes(31, evening))
    r.send("survey_answer", minutes(120, evening), {"survey": "nps", "score": 0})
    r.view(datetime(2024, 5, 7, 9, 0, tzinfo=timezone.utc))
    assert r.rules == ["detractor_follow_up"]
    assert r.policy == [
        ("cart_recovery", "quiet_hours", "deferred"),
        ("cart_recovery", "suppression", "suppressed"),
    ]


def test_quiet_release_wraps_midnight_and_follows_the_zone() -> None:
    qh = QuietHours(start=time(21), end=time(8))
    berlin = ZoneInfo("Europe/Berlin")
    t = datetime(2024, 5, 6, 22, 30, tzinfo=berlin).timestamp()
    assert quiet_release(t, berlin, qh) == datetime(2024, 5, 7, 8, 0, tzinfo=berlin).timestamp()
    t = datetime(2024, 5, 7, 3, 0, tzinfo=berlin).timestamp()
    assert quiet_release(t, berlin, qh) == datetime(2024, 5, 7, 8, 0, tzinfo=berlin).timestamp()
    assert quiet_release(datetime(2024, 5, 7, 8, 0, tzinfo=berlin).timestamp(), berlin, qh) is None
    assert (
        quiet_release(datetime(2024, 5, 7, 20, 59, tzinfo=berlin).timestamp(), berlin, qh) is None
    )
    # across the spring DST change (Berlin, 31 March 2024): the release is still 08:00 local
    t = datetime(2024, 3, 30, 23, 0, tzinfo=berlin).timestamp()
    released = datetime.fromtimestamp(quiet_release(t, berlin, qh) or 0, berlin)
    assert (released.date().isoformat(), released.hour) == ("2024-03-31", 8)


def test_quiet_hours_within_one_day() -> None:
    qh = QuietHours(start=time(12), end=time(14))
    utc = timezone.utc
    assert quiet_release(NOON.timestamp(), utc, qh) == minutes(120).timestamp()
    assert quiet_release(minutes(120).timestamp(), utc, qh) is None


def test_unknown_zone_falls_back_to_utc() -> None:
    assert zone("Mars/Olympus_Mons") is timezone.utc
    assert zone(None) is timezone.utc


def test_quiet_hours_can_be_disabled() -> None:
    r = Run(engine(quiet_hours=None))
    evening = datetime(2024, 5, 6, 22, 0, tzinfo=timezone.utc)
    r.abandon(evening)
    r.view(minutes(31, evening))
    assert r.rules == ["cart_recovery"]


# ------------------------------------------------------------------ suppression


def test_open_support_alert_suppresses_marketing_within_the_window() -> None:
    r = Run(engine())
    for m in (0, 5, 10):  # friction_spike: a support alert
        r.send("app_error", minutes(m), {"error_code": "E"})
    r.abandon(minutes(20))
    r.view(minutes(60))
    assert r.rules == ["friction_spike"]
    assert r.policy == [("cart_recovery", "suppression", "suppressed")]
    later = NOON + timedelta(hours=48, minutes=11)  # window of 48 h has passed
    r.abandon(later)
    r.view(minutes(31, later))
    assert r.rules == ["friction_spike", "cart_recovery"]


def test_recent_detractor_answer_suppresses_marketing_for_seven_days() -> None:
    r = Run(engine(open_support_alert_s=0))
    r.send("survey_answer", minutes(0), {"survey": "nps", "score": 4})
    day6 = NOON + timedelta(days=6)
    r.abandon(day6)
    r.view(minutes(31, day6))
    assert r.rules == ["detractor_follow_up"]
    assert r.policy[-1] == ("cart_recovery", "suppression", "suppressed")
    day8 = NOON + timedelta(days=8)
    r.abandon(day8)
    r.view(minutes(31, day8))
    assert r.rules[-1] == "cart_recovery"


def test_suppression_never_blocks_support_alerts() -> None:
    r = Run(engine())
    r.send("survey_answer", minutes(0), {"survey": "nps", "score": 6})
    r.send("support_contact", minutes(10), {"contact_id": "a", "reason": "x", "resolved": False})
    r.send("support_contact", minutes(20), {"contact_id": "b", "reason": "x", "resolved": True})
    assert r.rules == ["detractor_follow_up", "repeat_contact"]


def _suppressed_and_would_be(rule: str, feed: Any) -> tuple[list[Any], dict[datetime, str]]:
    """``rule``'s suppressed policy events with the default cooldown, and the alert id each
    event time gets in a run without the cooldown (and a support cap out of the way); ``feed``
    sends the same events to both runs."""
    suppressed = Run(engine())
    sent = Run(engine({rule: 0}, daily_cap={"marketing": 2, "support": 100}))
    for r in (suppressed, sent):
        feed(r)
    would_be = {a.event_time: a.alert_id for o in sent.outs for a in o.alerts if a.rule == rule}
    held = [p for o in suppressed.outs for p in o.policy_events if p.rule == rule]
    return held, would_be


def test_a_suppressed_experience_drop_reports_the_id_its_alert_would_have_had() -> None:
    # The drop's evidence is the customer's negative signals at that event: a suppressed one's
    # alert id must be the id the alert would have had then, however the state moves on.
    def feed(r: Run) -> None:  # experience_drop: a 24-h cooldown by default
        for i, score in enumerate((0, 1, 0, 2, 0, 1, 0)):
            r.send("survey_answer", minutes(20 * i), {"survey": "nps", "score": score})

    held, would_be = _suppressed_and_would_be("experience_drop", feed)
    assert len(held) >= 4
    assert {p.reason for p in held} == {"cooldown"}
    assert {p.event_time: p.alert_id for p in held}.items() <= would_be.items()
    assert len({p.alert_id for p in held}) == len(held)  # each drop's own evidence


def test_a_suppressed_friction_spike_reports_the_id_its_alert_would_have_had() -> None:
    def feed(r: Run) -> None:
        for i in range(8):
            r.send("app_error", minutes(5 * i), {"error_code": "E42"})

    held, would_be = _suppressed_and_would_be("friction_spike", feed)
    assert len(held) >= 4
    assert {p.reason for p in held} == {"cooldown"}
    assert {p.event_time: p.alert_id for p in held}.items() <= would_be.items()
