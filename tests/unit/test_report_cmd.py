"""`cxsignals report`: argument parsing, KPI arithmetic of DOMAIN.md, and the rendering."""

from __future__ import annotations

import argparse

import pytest

from cxsignals.report_cmd import add_parser, parse_duration_s, render_table, resolve_window
from sinks.queries import COUNTER_NAMES, funnel, kpis, top_reasons


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_defaults_and_options() -> None:
    args = _parse(["report"])
    assert (args.view, args.format, args.source) == ("kpis", "table", "raw")
    assert resolve_window(args) == (86_400, "channel")
    args = _parse(["report", "--since", "7d", "--by", "stage", "--format", "json"])
    assert (resolve_window(args), args.format) == ((7 * 86_400, "stage"), "json")
    assert resolve_window(_parse(["report", "outcomes"])) == (30 * 86_400, None)
    assert resolve_window(_parse(["report", "outcomes", "--since", "7d", "--by", "segment"])) == (
        7 * 86_400, "segment")
    with pytest.raises(ValueError, match="channel, segment"):
        resolve_window(_parse(["report", "outcomes", "--by", "stage"]))


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1.5h", 5400),
                                               ("2w", 1_209_600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["24", "h", "-1h", "3y"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration_s(bad)


def test_unknown_cut_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parse(["report", "--by", "country"])


def test_kpis_follow_the_domain_definitions() -> None:
    counters = dict.fromkeys(COUNTER_NAMES, 0)
    # NPS answers: 3 promoters, 1 passive, 2 detractors -> (3 - 2) / 6 = +16.7
    counters.update(nps_promoters=3, nps_passives=1, nps_detractors=2)
    # CSAT answers 5, 4, 1 -> mean 3.33, 2 of 3 are 4-5
    counters.update(csat_sum=10, csat_count=3, csat_4_5=2)
    # CES answers 7, 2 -> mean 4.5, 1 of 2 is 5-7
    counters.update(ces_sum=9, ces_count=2, ces_5_7=1)
    counters.update(checkouts_started=8, carts_abandoned=2, events=20)
    k = kpis(counters)
    assert k["nps"] == pytest.approx(100 * 1 / 6)
    assert k["csat_mean"] == pytest.approx(10 / 3) and k["csat_pct_4_5"] == pytest.approx(200 / 3)
    assert k["ces_mean"] == 4.5 and k["ces_pct_5_7"] == 50.0
    assert k["cart_abandonment_rate"] == 0.25
    assert k["nps_responses"] == 6 and k["events"] == 20


def test_kpis_without_answers_are_none_not_zero() -> None:
    k = kpis({})
    assert k["nps"] is None and k["csat_mean"] is None and k["cart_abandonment_rate"] is None
    assert k["events"] == 0


def test_funnel_in_journey_order_with_drop_off() -> None:
    steps = funnel({"purchase": 25, "awareness": 100, "consideration": 50, "loyalty": 5})
    assert [s["stage"] for s in steps] == [
        "awareness", "consideration", "purchase", "usage", "loyalty"]
    assert [s["drop_off"] for s in steps] == [None, 0.5, 0.5, 1.0, None]


def test_top_reasons_are_the_most_negative_signals() -> None:
    explanation = (
        '[{"signal":"slow_page","contribution":-2,"event_id":"a"},'
        '{"signal":"detractor","contribution":-9,"event_id":"b"},'
        '{"signal":"purchase","contribution":6,"event_id":"c"},'
        '{"signal":"detractor","contribution":-4,"event_id":"d"}]'
    )
    assert top_reasons(explanation) == ["detractor", "slow_page"]
    assert top_reasons("not json") == []


def test_render_table_shows_every_section() -> None:
    report = {
        "window": {"since_s": 0, "until_s": 86_400}, "source": "raw", "by": "channel",
        "overall": kpis({"events": 3, "nps_promoters": 1}),
        "cuts": [{"cut": "web", **kpis({"events": 3, "nps_promoters": 1})}],
        "revenue": [{"currency": "EUR", "purchases": 2, "revenue": 30.5}],
        "funnel": funnel({"awareness": 4, "consideration": 1}),
        "top_churn": [{"customer_id": "c9", "churn_risk": 0.91, "experience_score": 12.0,
                       "journey_stage": "usage", "top_reasons": ["detractor"],
                       "updated_ms": 0}],
        "alerts": [{"rule": "detractor_followup", "kind": "support", "alerts": 4}],
    }
    text = render_table(report)
    assert "last 24 h, by channel" in text
    assert "100.0" in text  # NPS of one promoter
    assert "75.0%" in text  # funnel drop-off 4 -> 1
    assert "c9" in text and "detractor" in text and "30.50" in text
    assert "detractor_followup" in text
