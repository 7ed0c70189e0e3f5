"""Control groups: the share per rule, the deterministic assignment, and the policy treating a
control alert as sent (issue 16)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import orjson
import pytest

from streams.core.alert_ids import alert_id, control_fraction, in_control_group
from streams.core.rules import RulesError, parse_rules
from tests.unit.test_policy import DEFAULT_DOC, Run, minutes
from tests.unit.test_rules import FixedSentiment


def _doc(**shares: float | None) -> dict[str, Any]:
    doc = copy.deepcopy(DEFAULT_DOC)
    for rule in doc["rules"]:
        if rule["id"] in shares:
            if shares[rule["id"]] is None:
                rule.pop("control_share", None)
            else:
                rule["control_share"] = shares[rule["id"]]
    return doc


def _engine(**shares: float | None) -> Any:
    from streams.core.engine import Engine
    from streams.core.engine_config import EngineConfig

    return Engine(EngineConfig(), parse_rules(_doc(**shares)), FixedSentiment(0.0))


def test_default_share_is_a_tenth_for_marketing_and_zero_for_support() -> None:
    rules = parse_rules(_doc(cart_recovery=None, repeat_contact=None))
    assert rules.control_share("cart_recovery") == pytest.approx(0.10)
    assert rules.control_share("repeat_contact") == 0.0
    shipped = parse_rules(DEFAULT_DOC)
    assert {r: shipped.control_share(r) for r in ("win_back", "detractor_follow_up")} == {
        "win_back": pytest.approx(0.10), "detractor_follow_up": 0.0}
    assert parse_rules(_doc(repeat_contact=0.25)).control_share("repeat_contact") == 0.25


@pytest.mark.parametrize("bad", [-0.1, 1.5, "a lot"])
def test_a_share_outside_0_1_is_refused_naming_the_rule(bad: Any) -> None:
    with pytest.raises(RulesError, match="cart_recovery.*control_share"):
        parse_rules(_doc(cart_recovery=bad))


def test_assignment_is_a_stable_hash_of_the_id_and_matches_the_share() -> None:
    ids = [alert_id("cart_recovery", f"c{i}", [str(uuid.UUID(int=i))]) for i in range(20_000)]
    # Fixed values: the same in every process and Python version (not hash()).
    assert control_fraction("00000000-0000-5000-8000-000000000000") == pytest.approx(
        int.from_bytes(__import__("hashlib").sha256(
            b"00000000-0000-5000-8000-000000000000").digest()[:8], "big") / 2**64)
    share = sum(in_control_group(i, 0.10) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert not any(in_control_group(i, 0.0) for i in ids)
    assert all(in_control_group(i, 1.0) for i in ids)
    # Nested: raising the share only moves sent alerts into the control group.
    assert {i for i in ids if in_control_group(i, 0.05)} <= {
        i for i in ids if in_control_group(i, 0.10)}


def _abandon_and_wait(r: Run, start_min: float) -> None:
    r.abandon(minutes(start_min))
    r.view(minutes(start_min + 31))


def test_a_control_alert_is_withheld_and_counts_for_cooldown_like_a_sent_one() -> None:
    r = Run(_engine(cart_recovery=1.0))  # every cart_recovery alert is a control alert
    _abandon_and_wait(r, 0)
    assert [a.rule for o in r.outs for a in o.control_alerts] == ["cart_recovery"]
    assert [a.rule for o in r.outs for a in o.alerts] == []
    _abandon_and_wait(r, 60)  # within the 6 h cooldown of the control alert
    assert ("cart_recovery", "cooldown", "suppressed") in r.policy
    assert len([a for o in r.outs for a in o.control_alerts]) == 1


def test_replay_gives_the_same_groups() -> None:
    def run() -> tuple[list[str], list[str]]:
        r = Run(_engine(cart_recovery=0.5, browse_intent=0.5))
        for k in range(40):
            _abandon_and_wait(r, k * 7 * 60)  # past the cooldown each time
        sent = [a.alert_id for o in r.outs for a in o.alerts]
        control = [a.alert_id for o in r.outs for a in o.control_alerts]
        return sent, control

    first, second = run(), run()
    assert first == second
    assert first[0] and first[1]  # both groups occur with a share of 0.5
    assert not set(first[0]) & set(first[1])


def test_control_alerts_go_to_the_control_topic_only() -> None:
    from datetime import datetime, timezone

    from schemas.topics import TopicNames
    from streams.processing import Processor
    from tests.journeys import build_engine, cart_abandoned

    topics = TopicNames(alerts_marketing="m", alerts_support="s", scores="sc",
                        alerts_control="ctl")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    outputs = []
    for share, customer in ((1.0, "c-ctl"), (0.0, "c-sent")):
        processor = Processor(build_engine(parse_rules(_doc(cart_recovery=share))),
                              lambda p, k: None, topics)
        for event in cart_abandoned(customer).events:
            outcome = processor.process(customer, 0, event, now)
            assert outcome is not None
            for o in processor.outputs(outcome, customer, kafka_ts_s=None):
                assert o.value is not None
                outputs.append((customer, o.topic, orjson.loads(o.value)))
    alerts = [(c, t, v["rule"]) for c, t, v in outputs if t != "sc"]
    assert alerts == [("c-ctl", "ctl", "cart_recovery"), ("c-sent", "m", "cart_recovery")]


def test_the_simulated_customers_react_only_to_their_alerts_deterministically() -> None:
    from datetime import datetime, timezone

    from cxsignals.simulator.response import ResponseModel, cart_experiment
    from schemas.events import touchpoint_adapter

    model = ResponseModel({"cart_recovery": 0.3}, customer_prefix="x-")
    alerts = [{"alert_id": f"a{i}", "rule": "cart_recovery", "customer_id": f"x-{i}",
               "event_time": "2026-12-01T10:30:00Z",
               "context": {"cart_id": "k", "cart_value": 20.0, "currency": "EUR"}}
              for i in range(4000)]
    reactions = [model.react(a) for a in alerts]
    assert [r.value if r else None for r in reactions] == [
        r.value if r else None for r in map(model.react, alerts)]
    share = sum(r is not None for r in reactions) / len(alerts)
    assert 0.27 < share < 0.33
    for r in filter(None, reactions[:200]):
        event = touchpoint_adapter.validate_json(r.value)
        delay_h = (event.occurred_at - datetime(2026, 12, 1, 10, 30, tzinfo=timezone.utc)
                   ).total_seconds() / 3600
        assert event.event_type == "purchase" and 1 <= delay_h <= 20
    assert model.react({**alerts[0], "customer_id": "c-0"}) is None  # not our customer
    assert model.react({**alerts[0], "rule": "win_back"}) is None  # no reaction configured

    start = datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
    messages = list(cart_experiment(2000, start, baseline=0.2, prefix="x-"))
    kinds = [orjson.loads(m.value)["event_type"] for m in messages]
    assert kinds.count("cart_abandon") == kinds.count("page_view") == 2000
    assert 0.17 < kinds.count("purchase") / 2000 < 0.23
    assert [m.event_time for m in messages] == sorted(m.event_time for m in messages)
