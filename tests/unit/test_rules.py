"""Rules: the validated configuration, and every rule at the edges of firing."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from schemas.alerts import AlertKind
from schemas.events import EventBase
from schemas.records import AlertRecord
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import DEFAULT_RULES_PATH, RULE_IDS, RulesError, load_rules, parse_rules
from streams.core.state import CustomerState
from tests.journeys import JOURNEY_BASE, make_event

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
DEFAULT_DOC: dict[str, Any] = json.loads(DEFAULT_RULES_PATH.read_text())


class FixedSentiment:
    """A stand-in analyzer returning a set compound score, to test thresholds exactly."""

    def __init__(self, value: float) -> None:
        self.value = value

    def compound(self, text: str) -> float:
        return self.value


def engine_with(
    params: dict[str, dict[str, Any]] | None = None,
    sentiment: float = 0.0,
    disabled: tuple[str, ...] = (),
    **policy: Any,
) -> Engine:
    """Default rules with some params changed; no quiet hours, generous caps, unless given."""
    doc = copy.deepcopy(DEFAULT_DOC)
    for rule in doc["rules"]:
        rule["params"].update((params or {}).get(rule["id"], {}))
        rule["enabled"] = rule["id"] not in disabled
    doc["policy"].update({"quiet_hours": None, "daily_cap": {"marketing": 50, "support": 50}})
    doc["policy"].update(policy)
    return Engine(EngineConfig(), parse_rules(doc), FixedSentiment(sentiment))


def at(minutes: float) -> datetime:
    return JOURNEY_BASE + timedelta(minutes=minutes)


def ev(
    i: int | str, typ: str, minutes: float, props: dict[str, Any] | None = None, **kw: Any
) -> EventBase:
    return make_event("c", f"e{i}", typ, at(minutes), props, **kw)


def alerts_of(engine: Engine, events: Sequence[EventBase]) -> list[AlertRecord]:
    state: CustomerState | None = None
    out: list[AlertRecord] = []
    for e in events:
        o = engine.process(state, "c", e, now=NOW)
        state = o.state
        out.extend(o.alerts)
    return out


def rules_fired(engine: Engine, events: Sequence[EventBase]) -> list[str]:
    return [a.rule for a in alerts_of(engine, events)]


# ------------------------------------------------------------------ configuration


def test_default_rules_load_with_every_rule_enabled() -> None:
    rules = load_rules(None)
    assert set(rules.enabled) == set(RULE_IDS)
    assert rules.enabled["cart_recovery"].params.wait_minutes == 30
    assert rules.enabled["friction_spike"].params.min_errors == 3
    assert rules.policy.daily_cap[AlertKind.marketing] == 2


def _write(tmp_path: Path, doc: Any) -> Path:
    p = tmp_path / "rules.json"
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def _mutated(rule_id: str, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DEFAULT_DOC)
    for rule in doc["rules"]:
        if rule["id"] == rule_id:
            rule.update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            _mutated("cart_recovery", params={"wait_minutes": -5}),
            r"rule 'cart_recovery' \(rules\[0\]\) field params.wait_minutes",
        ),
        (
            _mutated("friction_spike", params={"min_errrors": 3}),
            r"rule 'friction_spike' .*field params.min_errrors: Extra inputs",
        ),
        (_mutated("win_back", kind="support"), r"rule 'win_back'.*marketing rule, not support"),
        (_mutated("browse_intent", id="browse_everything"), r"rules\[1\].*browse_everything"),
        (_mutated("repeat_contact", enabled="sometimes"), r"rule 'repeat_contact'.*enabled"),
        (
            {**DEFAULT_DOC, "rules": DEFAULT_DOC["rules"] + DEFAULT_DOC["rules"][:1]},
            r"'cart_recovery' is listed twice",
        ),
        ({**DEFAULT_DOC, "version": 2}, r"field version"),
        (
            {**DEFAULT_DOC, "policy": {"quiet_hours": {"start": "08:00", "end": "08:00"}}},
            r"policy.quiet_hours.*must differ",
        ),
    ],
)
def test_invalid_rules_file_names_rule_and_field(tmp_path: Path, doc: Any, expected: str) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(RulesError, match=expected) as err:
        load_rules(path)
    assert str(path) in str(err.value)


def test_rules_file_that_is_not_json_or_missing(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not valid JSON"):
        load_rules(_write(tmp_path, "{nope"))
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.json")


def test_disabled_and_unlisted_rules_do_not_run() -> None:
    doc = copy.deepcopy(DEFAULT_DOC)
    doc["rules"] = [r for r in doc["rules"] if r["id"] != "repeat_contact"]
    for r in doc["rules"]:
        if r["id"] in ("detractor_follow_up", "experience_drop"):
            r["enabled"] = False
    rules = parse_rules(doc)
    assert "repeat_contact" not in rules.enabled and "detractor_follow_up" not in rules.enabled
    engine = Engine(EngineConfig(), rules, FixedSentiment(0.0))
    events = [
        ev(1, "survey_answer", 0, {"survey": "nps", "score": 0}),
        ev(2, "support_contact", 1, {"contact_id": "a", "reason": "x", "resolved": False}),
        ev(3, "support_contact", 2, {"contact_id": "b", "reason": "x", "resolved": False}),
    ]
    assert rules_fired(engine, events) == []


# ------------------------------------------------------------------ cart_recovery


def _abandon(value: float, minutes: float = 0, i: int = 1) -> EventBase:
    return ev(
        i, "cart_abandon", minutes, {"cart_id": f"k{i}", "cart_value": value, "currency": "EUR"}
    )


def _purchase(minutes: float, i: int = 9, value: float = 10.0) -> EventBase:
    return ev(
        i, "purchase", minutes, {"order_id": f"o{i}", "order_value": value, "currency": "EUR"}
    )


def _view(minutes: float, i: int | str = 8, product: str | None = None) -> EventBase:
    props: dict[str, Any] = {"url": "/"}
    if product:
        props["product_id"] = product
    return ev(i, "page_view", minutes, props)


def test_cart_recovery_fires_at_value_threshold_and_not_below() -> None:
    engine = engine_with()
    assert rules_fired(engine, [_abandon(20.0), _view(31)]) == ["cart_recovery"]
    assert rules_fired(engine_with(), [_abandon(19.99), _view(31)]) == []


def test_cart_recovery_deadline_is_inclusive_in_event_time() -> None:
    assert rules_fired(engine_with(), [_abandon(50), _view(29.99)]) == []
    assert rules_fired(engine_with(), [_abandon(50), _view(30)]) == ["cart_recovery"]


def test_purchase_within_wait_cancels_cart_recovery() -> None:
    assert rules_fired(engine_with(), [_abandon(50), _purchase(30), _view(90)]) == []
    late_buy = rules_fired(engine_with(), [_abandon(50), _purchase(30.02), _view(90)])
    assert late_buy == ["cart_recovery"]


def test_cart_recovery_wait_is_configurable() -> None:
    engine = engine_with({"cart_recovery": {"wait_minutes": 5}})
    assert rules_fired(engine, [_abandon(50), _view(6)]) == ["cart_recovery"]


# ------------------------------------------------------------------ browse_intent


def test_browse_intent_three_views_of_one_product_within_an_hour() -> None:
    views = [_view(0, 1, "p"), _view(30, 2, "p"), _view(60, 3, "p")]
    alerts = alerts_of(engine_with(), views)
    assert [a.rule for a in alerts] == ["browse_intent"]
    assert alerts[0].context == {"product_id": "p", "views": 3}
    assert alerts[0].evidence == ["e1", "e2", "e3"]


@pytest.mark.parametrize(
    "events",
    [
        [_view(0, 1, "p"), _view(30, 2, "p")],  # two views only
        [_view(0, 1, "p"), _view(30, 2, "p"), _view(60.1, 3, "p")],  # spread over > 1 h
        [_view(0, 1, "p"), _view(30, 2, "q"), _view(40, 3, "p")],  # different products
        [
            _view(0, 1, "p"),
            ev(5, "checkout_started", 10, {"cart_id": "k"}),
            _view(30, 2, "p"),
            _view(40, 3, "p"),
        ],  # a cart in between
    ],
    ids=["two_views", "over_an_hour", "other_product", "with_cart"],
)
def test_browse_intent_does_not_fire(events: list[EventBase]) -> None:
    assert rules_fired(engine_with(), events) == []


# ------------------------------------------------------------------ win_back

WEEK = 7 * 24 * 60


def _lapsed(return_after_weeks: float) -> list[EventBase]:
    return [
        _purchase(0, 1),
        _purchase(WEEK, 2),
        _purchase(2 * WEEK, 3),
        _view(2 * WEEK + return_after_weeks * WEEK, 4),
    ]


def test_win_back_fires_when_risk_crosses_threshold() -> None:
    alerts = alerts_of(engine_with(), _lapsed(20))
    assert [a.rule for a in alerts] == ["win_back"]
    a = alerts[0]
    assert a.churn_risk >= 0.6 and a.experience_score >= 40
    assert a.evidence == ["e3", "e4"]
    # thresholds just above what the customer reached: no alert
    assert (
        rules_fired(
            engine_with({"win_back": {"min_churn_risk": a.churn_risk + 0.001}}), _lapsed(20)
        )
        == []
    )
    assert (
        rules_fired(
            engine_with({"win_back": {"min_experience_score": a.experience_score + 0.01}}),
            _lapsed(20),
        )
        == []
    )


def test_win_back_needs_a_crossing_and_purchases() -> None:
    assert rules_fired(engine_with(), _lapsed(0.5)) == []  # still active: low risk
    never_bought = [_view(0, 1), _view(60 * WEEK, 2)]
    assert rules_fired(engine_with({"win_back": {"min_churn_risk": 0.2}}), never_bought) == []
    # already above the threshold before the event: no new crossing
    events = _lapsed(20) + [_view(2 * WEEK + 21 * WEEK, 5)]
    assert rules_fired(engine_with(), events) == ["win_back"]


# ------------------------------------------------------------------ promoter_referral


def _nps(score: int, minutes: float, i: int = 5) -> EventBase:
    return ev(i, "survey_answer", minutes, {"survey": "nps", "score": score})


def test_promoter_referral_after_purchase() -> None:
    alerts = alerts_of(engine_with(), [_purchase(0, 1), _nps(9, 60)])
    assert [a.rule for a in alerts] == ["promoter_referral"]
    assert alerts[0].evidence == ["e1", "e5"]
    assert alerts[0].context["nps"] == 9


@pytest.mark.parametrize(
    "events",
    [
        [_purchase(0, 1), _nps(8, 60)],  # passive
        [_nps(10, 60)],  # no purchase
        [_purchase(0, 1), _nps(10, 30 * 24 * 60 + 1)],  # purchase too long ago
    ],
    ids=["passive", "no_purchase", "too_late"],
)
def test_promoter_referral_does_not_fire(events: list[EventBase]) -> None:
    assert "promoter_referral" not in rules_fired(engine_with(), events)


def test_promoter_referral_window_edge_is_inclusive() -> None:
    events = [_purchase(0, 1), _nps(10, 30 * 24 * 60)]
    assert rules_fired(engine_with(), events) == ["promoter_referral"]


# ------------------------------------------------------------------ detractor_follow_up


@pytest.mark.parametrize(
    ("survey", "fires", "quiet"),
    [("nps", 6, 7), ("csat", 2, 3), ("ces", 2, 3)],
)
def test_detractor_follow_up_score_edges(survey: str, fires: int, quiet: int) -> None:
    hit = alerts_of(engine_with(), [ev(1, "survey_answer", 0, {"survey": survey, "score": fires})])
    assert [a.rule for a in hit] == ["detractor_follow_up"]
    assert hit[0].context["survey"] == survey and hit[0].context["score"] == fires
    miss = rules_fired(
        engine_with(), [ev(1, "survey_answer", 0, {"survey": survey, "score": quiet})]
    )
    assert "detractor_follow_up" not in miss


@pytest.mark.parametrize(("sentiment", "fires"), [(-0.5, True), (-0.49, False)])
def test_detractor_follow_up_on_negative_comment(sentiment: float, fires: bool) -> None:
    answer = ev(1, "survey_answer", 0, {"survey": "nps", "score": 8, "comment": "meh"})
    fired = rules_fired(engine_with(sentiment=sentiment), [answer])
    assert (fired == ["detractor_follow_up"]) is fires


def test_detractor_follow_up_with_real_vader_on_an_angry_comment() -> None:
    from tests.journeys import build_engine

    answer = ev(
        1,
        "survey_answer",
        0,
        {"survey": "csat", "score": 3, "comment": "Horrible, the worst service ever. I hate it."},
    )
    alerts = alerts_of(build_engine(), [answer])
    assert [a.rule for a in alerts] == ["detractor_follow_up"]
    assert alerts[0].context["sentiment"] <= -0.5
    assert "comment" not in json.dumps(alerts[0].context)  # free text never leaves the engine


# ------------------------------------------------------------------ repeat_contact


def _contact(i: int, minutes: float, resolved: bool) -> EventBase:
    return ev(
        i,
        "support_contact",
        minutes,
        {"contact_id": f"t{i}", "reason": "billing", "resolved": resolved},
    )


def test_repeat_contact_edges() -> None:
    day = 24 * 60
    assert rules_fired(engine_with(), [_contact(1, 0, False), _contact(2, day, True)]) == [
        "repeat_contact"
    ]
    assert rules_fired(engine_with(), [_contact(1, 0, False), _contact(2, day + 0.02, True)]) == []
    assert rules_fired(engine_with(), [_contact(1, 0, True), _contact(2, 60, True)]) == []
    assert rules_fired(engine_with(), [_contact(1, 0, False)]) == []


def test_repeat_contact_context_lists_contacts() -> None:
    (alert,) = alerts_of(engine_with(), [_contact(1, 0, True), _contact(2, 60, False)])
    assert alert.context["contacts"] == 2 and alert.context["unresolved"] == 1
    assert alert.context["contact_ids"] == ["t1", "t2"]
    assert alert.kind is AlertKind.support


# ------------------------------------------------------------------ friction_spike


def _error(i: int, minutes: float, kind: str = "app") -> EventBase:
    if kind == "app":
        return ev(i, "app_error", minutes, {"error_code": "E42"})
    if kind == "pay":
        return ev(i, "payment_failed", minutes, {"reason": "declined"})
    status = 503 if kind == "5xx" else 404
    return ev(i, "page_view", minutes, {"url": "/x", "http_status": status})


def test_friction_spike_three_errors_within_an_hour() -> None:
    events = [_error(1, 0, "app"), _error(2, 20, "pay"), _error(3, 60, "5xx")]
    alerts = alerts_of(engine_with(), events)
    assert [a.rule for a in alerts] == ["friction_spike"]
    assert alerts[0].context["by_kind"] == {"app_error": 1, "payment_failed": 1, "error_page": 1}
    assert alerts[0].context["errors"] == 3
    assert alerts[0].context["first_at"] == events[0].occurred_at.astimezone(
        timezone.utc).isoformat()
    assert alerts[0].evidence == ["e1", "e2", "e3"]
    assert alerts[0].action.startswith("3 errors or failed payments within 60 min: ")


@pytest.mark.parametrize(
    "events",
    [
        [_error(1, 0), _error(2, 20)],
        [_error(1, 0), _error(2, 20), _error(3, 60.1)],
        [_error(1, 0), _error(2, 20), _error(3, 30, "404")],  # a 404 is not an error spike
    ],
    ids=["two", "spread", "not_found"],
)
def test_friction_spike_does_not_fire(events: list[EventBase]) -> None:
    assert rules_fired(engine_with(), events) == []


def test_friction_spike_threshold_is_configurable() -> None:
    engine = engine_with({"friction_spike": {"min_errors": 2}})
    assert rules_fired(engine, [_error(1, 0), _error(2, 5)]) == ["friction_spike"]


# ------------------------------------------------------------------ experience_drop

BAD_DAY = [
    ev(1, "survey_answer", 0, {"survey": "nps", "score": 0}),
    ev(2, "survey_answer", 60, {"survey": "csat", "score": 1}),
]


def _drop_rules(points: float) -> Engine:
    # the detractor rule would alert too; keep this test about the drop
    return engine_with(
        {"experience_drop": {"min_drop_points": points}}, disabled=("detractor_follow_up",)
    )


def test_experience_drop_fires_at_threshold() -> None:
    alerts = alerts_of(_drop_rules(20), BAD_DAY)
    assert [a.rule for a in alerts] == ["experience_drop"]
    ctx = alerts[0].context
    drop = ctx["from_score"] - ctx["to_score"]
    assert drop >= 20 and ctx["from_score"] == 50
    assert alerts[0].evidence == ["e1", "e2"]
    # the same day with a threshold just above the actual drop: no alert
    assert rules_fired(_drop_rules(round(drop, 2) + 0.02), BAD_DAY) == []


def test_experience_drop_ignores_falls_spread_over_more_than_a_day() -> None:
    spread = [
        ev(1, "survey_answer", 0, {"survey": "nps", "score": 0}),
        ev(2, "survey_answer", 25 * 60, {"survey": "csat", "score": 1}),
        ev(3, "survey_answer", 50 * 60, {"survey": "ces", "score": 1}),
    ]
    assert rules_fired(_drop_rules(20), spread) == []


def test_an_experience_drop_candidate_is_built_when_read_from_the_signals_it_fired_on() -> None:
    from schemas.event_records import from_model
    from streams.core.rule_config import ExperienceDropRule
    from streams.core.rule_evaluators import Candidate, EventFacts, _experience_drop

    rule = load_rules(DEFAULT_RULES_PATH).enabled["experience_drop"]
    assert isinstance(rule, ExperienceDropRule)
    st = CustomerState(watermark=10_000.0)
    st.signals.add(9_000.0, "e1", [("detractor", -8.0)], 24, 3600.0)
    st.signals.add(9_500.0, "e2", [("low_csat", -6.0)], 24, 3600.0)
    event = from_model(make_event("c", "e3", "survey_answer", JOURNEY_BASE,
                                  {"survey": "nps", "score": 0}))
    facts = EventFacts(event, 10_000.0, None, 40.0, 25.0, 50.0, 0.1, 0.2, 0.0)
    cand = _experience_drop(st, facts, rule)
    assert isinstance(cand, Candidate) and not cand.built  # nothing built while unread
    # the state moves on before anyone reads the candidate: it still tells of its own event
    st.signals.add(9_900.0, "e4", [("app_error", -5.0)], 24, 3600.0)
    assert cand.evidence == ["e1", "e2", "e3"] and cand.built
    assert cand.context == {"from_score": 50.0, "to_score": 25.0}
    assert cand.action.startswith("Experience score fell 25 points within 24 h")
    # a fall below the threshold: no candidate at all
    assert _experience_drop(st, EventFacts(event, 10_000.0, None, 40.0, 35.0, 50.0, 0.1, 0.2,
                                           0.0), rule) is None


# ------------------------------------------------------------------ high_value_at_risk


def test_high_value_at_risk_fires_once_when_both_thresholds_are_met() -> None:
    events = [
        _purchase(0, 1, 300.0),
        _purchase(WEEK, 2, 300.0),
        _view(6 * WEEK, 3),  # 5 quiet weeks: the risk crosses 0.5, the CLV is still high
        _view(7 * WEEK, 4),
    ]
    alerts = [a for a in alerts_of(engine_with(), events) if a.rule == "high_value_at_risk"]
    assert len(alerts) == 1
    assert alerts[0].context["lifetime_spend"] == 600.0
    assert alerts[0].context["clv_12m"] >= 200.0
    assert alerts[0].churn_risk >= 0.5
    assert alerts[0].evidence == ["e2", "e3"]
    drivers = alerts[0].context["churn_drivers"]
    assert drivers and all({"name", "log_odds", "value", "evidence"} <= set(d) for d in drivers)
    assert any(d["name"] == "recency_months" and d["evidence"] == ["e2"] for d in drivers)


def test_high_value_at_risk_needs_the_customer_value() -> None:
    events = [_purchase(0, 1, 30.0), _purchase(WEEK, 2, 30.0), _view(6 * WEEK, 3)]
    assert "high_value_at_risk" not in rules_fired(engine_with(), events)
    low_bar = engine_with({"high_value_at_risk": {"min_clv_12m": 10.0}})
    assert "high_value_at_risk" in rules_fired(low_bar, events)
    floor = engine_with({"high_value_at_risk": {"min_clv_12m": 10.0, "min_spend": 61.0}})
    assert "high_value_at_risk" not in rules_fired(floor, events)
