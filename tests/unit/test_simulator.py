"""The journey simulator: determinism, contract validity, journeys, friction, bad messages, CLI."""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from cxsignals.simulate_cmd import add_parser, config_from_args, until, write_lines
from cxsignals.simulator import BAD_CODES, SimConfig, SimMessage, generate
from cxsignals.simulator.comments import COMPLAINTS, PRAISE, PRAISE_SUPPORT
from cxsignals.simulator.delivery import PublishStats
from cxsignals.simulator.publisher import TokenBucket
from schemas.events import EVENT_MODELS, SURVEY_SCALES, touchpoint_adapter

START = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]


def _config(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {
        "customers": 300,
        "seed": 7,
        "start": START,
        "total_events": 30_000,
        "event_gap_s": 0.5,
        "bad_share": 0.0,
    }
    base.update(overrides)
    return SimConfig(**base)


@pytest.fixture(scope="module")
def good() -> list[SimMessage]:
    return list(generate(_config()))


@pytest.fixture(scope="module")
def events(good: list[SimMessage]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in good]


@pytest.fixture(scope="module")
def histories(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Events per person, anonymous history stitched to the customer by the identify events."""
    alias = {e["anonymous_id"]: e["customer_id"] for e in events if e["event_type"] == "identify"}
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        per[e["customer_id"] or alias.get(e["anonymous_id"], e["anonymous_id"])].append(e)
    return per


def _friction(e: dict[str, Any]) -> bool:
    t, p = e["event_type"], e["properties"]
    if t == "page_view":
        return bool(p.get("load_time_ms", 0) > 3000 or p.get("http_status", 200) >= 500)
    if t == "support_contact":
        return not p["resolved"] or p.get("wait_s", 0) > 900
    return t in ("app_error", "payment_failed", "cart_abandon")


def _normalized(props: dict[str, Any]) -> float:
    low, high = SURVEY_SCALES[props["survey"]]
    return (props["score"] - low) / (high - low)


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_and_start_give_identical_messages() -> None:
    config = _config(total_events=3000, bad_share=0.05)
    assert list(generate(config)) == list(generate(config))


def test_another_seed_or_start_gives_other_messages() -> None:
    base = [m.value for m in generate(_config(total_events=500))]
    other_seed = [m.value for m in generate(_config(total_events=500, seed=8))]
    later = [m.value for m in generate(_config(total_events=500, start=START + timedelta(days=1)))]
    assert base != other_seed
    assert base != later


def test_default_start_is_now_rounded_to_the_second() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    start = SimConfig().start
    assert start.microsecond == 0
    assert before <= start <= datetime.now(timezone.utc)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimConfig(start=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="bad_share"):
        SimConfig(bad_share=1.5)
    with pytest.raises(ValueError, match="customers"):
        SimConfig(customers=0)


# -- the contract -------------------------------------------------------------------------------


def test_every_good_message_validates_and_is_keyed_by_identity(good: list[SimMessage]) -> None:
    assert len(good) == 30_000
    for message in good:
        assert not message.is_bad and message.expected_error is None
        event = touchpoint_adapter.validate_json(message.value)
        assert message.key.decode() == (event.customer_id or event.anonymous_id)
        assert event.occurred_at == message.event_time


def test_uses_every_event_type(events: list[dict[str, Any]]) -> None:
    assert {e["event_type"] for e in events} == set(EVENT_MODELS)


def test_event_ids_are_unique_uuids(events: list[dict[str, Any]]) -> None:
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "4" for i in ids)


def test_mean_event_gap_follows_config(good: list[SimMessage]) -> None:
    span_s = (good[-1].event_time - good[0].event_time).total_seconds()
    assert span_s / (len(good) - 1) == pytest.approx(0.5, rel=0.05)


# -- journeys -----------------------------------------------------------------------------------


def test_event_time_never_decreases_per_customer(good: list[SimMessage]) -> None:
    last: dict[bytes, datetime] = {}
    for message in good:
        assert message.event_time >= last.get(message.key, message.event_time)
        last[message.key] = message.event_time


def test_customers_are_interleaved(good: list[SimMessage]) -> None:
    first_keys = [m.key for m in good[:200]]
    assert len(set(first_keys)) > 20
    # A session continues after other customers' events: the same key reappears non-adjacently.
    assert any(
        first_keys[i] == first_keys[j] and first_keys[i] != first_keys[i + 1]
        for i in range(50)
        for j in range(i + 2, 60)
    )


def test_identity_is_stitched(events: list[dict[str, Any]]) -> None:
    identifies = [e for e in events if e["event_type"] == "identify"]
    assert identifies
    stitched = 0
    for link in identifies:
        assert link["customer_id"] and link["anonymous_id"]
        aid, cid = link["anonymous_id"], link["customer_id"]
        position = events.index(link)
        before = [e for e in events[:position] if aid in (e["anonymous_id"], e["customer_id"])]
        after = [e for e in events[position + 1 :] if cid in (e["anonymous_id"], e["customer_id"])]
        # Anonymous first (anonymous_id only), then customer_id only.
        assert all(e["customer_id"] is None for e in before)
        assert all(e["customer_id"] == cid and e["anonymous_id"] is None for e in after)
        assert not any(e["anonymous_id"] == aid for e in events[position + 1 :])
        stitched += bool(before) and bool(after)
    assert stitched >= 5


def test_stages_and_channels_vary(events: list[dict[str, Any]]) -> None:
    stages = {e["journey_stage"] for e in events}
    assert {"awareness", "consideration", "purchase", "usage", "loyalty"} <= stages
    assert None in stages  # some producers send no stage: the pipeline derives it
    assert len({e["channel"] for e in events}) >= 6
    assert len({e["segment"] for e in events}) == 5


def test_friction_is_injected(events: list[dict[str, Any]]) -> None:
    pages = [e["properties"] for e in events if e["event_type"] == "page_view"]
    assert any(p["load_time_ms"] > 3000 for p in pages)
    assert any(p["http_status"] >= 500 for p in pages)
    contacts = [e for e in events if e["event_type"] == "support_contact"]
    assert any(not e["properties"]["resolved"] for e in contacts)
    assert any(e["properties"]["wait_s"] > 900 for e in contacts)
    per_day_reason: dict[tuple[str, str], int] = defaultdict(int)
    for e in contacts:
        per_day_reason[(e["customer_id"], e["properties"]["reason"])] += 1
    assert max(per_day_reason.values()) >= 2  # repeated contacts about one issue


def test_friction_customers_answer_surveys_lower(
    histories: dict[str, list[dict[str, Any]]],
) -> None:
    # "Met friction": a pain point earlier in the same session as the answer.
    with_friction: list[float] = []
    without: list[float] = []
    for history in histories.values():
        session, met = None, False
        for e in history:
            if e["session_id"] != session:
                session, met = e["session_id"], False
            met = met or _friction(e)
            if e["event_type"] == "survey_answer":
                (with_friction if met else without).append(_normalized(e["properties"]))
    assert len(with_friction) > 200 and len(without) > 200
    assert statistics.fmean(with_friction) < statistics.fmean(without) - 0.1


def test_comments_match_the_answer(events: list[dict[str, Any]]) -> None:
    complaints = {c for texts in COMPLAINTS.values() for c in texts}
    praise = set(PRAISE) | set(PRAISE_SUPPORT)
    surveys = [e["properties"] for e in events if e["event_type"] == "survey_answer"]
    negative = [_normalized(p) for p in surveys if p.get("comment") in complaints]
    positive = [_normalized(p) for p in surveys if p.get("comment") in praise]
    assert len(negative) > 50 and len(positive) > 50
    assert max(negative) < min(positive)


def test_some_abandoned_carts_are_bought_later(
    histories: dict[str, list[dict[str, Any]]],
) -> None:
    recovered = 0
    for history in histories.values():
        abandoned: dict[str, datetime] = {}
        started: set[str] = set()
        for e in history:
            props = e["properties"]
            when = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
            if e["event_type"] == "checkout_started":
                started.add(props["cart_id"])
            elif e["event_type"] == "cart_abandon":
                abandoned[props["cart_id"]] = when
            elif e["event_type"] == "purchase" and props.get("cart_id"):
                assert props["cart_id"] in started  # every online purchase had a checkout
                if props["cart_id"] in abandoned:
                    assert when >= abandoned[props["cart_id"]]
                    recovered += 1
    assert recovered >= 10


# -- bad messages -------------------------------------------------------------------------------


def test_bad_messages_cover_every_code_and_fail_validation() -> None:
    messages = list(generate(_config(total_events=5000, bad_share=0.1)))
    bad = [m for m in messages if m.is_bad]
    assert 350 < len(bad) < 650
    assert {m.expected_error for m in bad} == set(BAD_CODES)
    assert all(b"\n" not in m.value for m in bad)
    for m in bad:
        if m.expected_error == "too_large":
            assert len(m.value) > 1024 * 1024
    no_bad = list(generate(_config(total_events=1000, bad_share=0.0)))
    assert not any(m.is_bad for m in no_bad)
    assert all(m.is_bad for m in generate(_config(total_events=100, bad_share=1.0)))


def test_each_bad_message_gets_exactly_its_code() -> None:
    from streams.core.validation import Invalid, validate_event

    now = START + timedelta(days=1)
    for m in generate(_config(total_events=4000, bad_share=0.2)):
        result = validate_event(m.value, now=now)
        if m.is_bad:
            assert isinstance(result, Invalid), m.expected_error
            assert result.code.value == m.expected_error, (result.message, m.value[:200])
        else:
            assert not isinstance(result, Invalid), result


# -- bounded and unbounded runs, rate limiting --------------------------------------------------


def test_unbounded_generation_is_lazy() -> None:
    stream = generate(_config(total_events=None))
    assert len(list(itertools.islice(stream, 50_001))) == 50_001


def test_token_bucket_limits_the_rate() -> None:
    fake_now = [0.0]

    def sleep(seconds: float) -> None:
        fake_now[0] += seconds

    bucket = TokenBucket(100.0, clock=lambda: fake_now[0], sleep=sleep)
    for _ in range(1010):
        bucket.take()
    # The first burst (10 tokens) is free, the next 1000 take 10 s at 100/s.
    assert fake_now[0] == pytest.approx(10.0, rel=0.01)


def test_publish_stats_summary_counts_failures() -> None:
    stats = PublishStats(attempted=10, bad=2, elapsed_s=2.0)
    stats.record_error(RuntimeError("boom"))
    assert stats.sent == 9 and stats.rate_per_s == 5.0
    assert "1 failed" in stats.summary() and "RuntimeError: boom" in stats.summary()


# -- the command --------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["simulate", *argv])


def test_cli_defaults() -> None:
    args = _parse()
    config, rate = config_from_args(args)
    assert (args.customers, args.seed, args.bad_share, args.events) == (200, 42, 0.01, None)
    assert rate == 50.0 and config.event_gap_s == pytest.approx(0.02)
    assert config.total_events is None and args.duration_s is None


def test_cli_options_reach_the_config() -> None:
    args = _parse(
        "--customers", "5", "--rate", "0", "--events", "10", "--seed", "3",
        "--start", "2026-02-01T10:00:00+01:00", "--event-gap-s", "2", "--bad-share", "0.5",
    )  # fmt: skip
    config, rate = config_from_args(args)
    assert rate is None
    assert config == SimConfig(
        customers=5,
        seed=3,
        start=datetime(2026, 2, 1, 9, 0, tzinfo=timezone.utc),
        total_events=10,
        event_gap_s=2.0,
        bad_share=0.5,
    )
    assert config_from_args(_parse("--dry-run"))[1] is None  # dry runs are unthrottled


@pytest.mark.parametrize(
    "argv",
    [
        ("--start", "2026-02-01T10:00:00"),  # no zone
        ("--bad-share", "2"),
        ("--events", "-1"),
        ("--events", "5", "--duration-s", "3"),
    ],
)
def test_cli_rejects_bad_options(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_dry_run_writes_one_line_per_message() -> None:
    config = _config(total_events=300, bad_share=0.1)
    out = io.BytesIO()
    assert write_lines(generate(config), out, None) == 300
    lines = out.getvalue().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [m.value for m in generate(config)]


def test_duration_stops_the_stream() -> None:
    assert list(until(generate(_config(total_events=None)), deadline=0.0)) == []
