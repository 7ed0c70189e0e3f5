"""Row mapping: every record type maps to a tuple in its table's column order, losslessly."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.alerts import Alert, AlertKind, Contribution
from schemas.events import EventBase, JourneyStage, touchpoint_adapter
from schemas.records import decode_alert, decode_score_update
from schemas.scores import ScoreUpdate
from sinks import rows as R

NOW = datetime(2025, 3, 4, 12, 30, 15, 123456, tzinfo=timezone.utc)


def _event(event_type: str, properties: dict, **envelope: object) -> EventBase:
    body = {
        "event_id": f"e-{event_type}",
        "schema_version": 1,
        "occurred_at": NOW.isoformat(),
        "customer_id": "c1",
        "channel": "web",
        "event_type": event_type,
        "properties": properties,
        **envelope,
    }
    return touchpoint_adapter.validate_python(body)


def test_column_lists_are_unique_and_dedup_columns_exist() -> None:
    for table, columns in R.TABLE_COLUMNS.items():
        assert len(set(columns)) == len(columns), table
        assert set(R.DEDUP_COLUMNS[table]) <= set(columns)


def test_survey_event_row() -> None:
    event = _event(
        "survey_answer", {"survey": "nps", "score": 0, "comment": "awful"},
        segment="vip", touchpoint="email_survey", session_id="s9",
    )
    row = R.as_dict(R.TOUCHPOINT_EVENTS, R.event_row(event, -0.75, ingested_at=NOW))
    assert row["event_id"] == "e-survey_answer"
    assert row["survey"] == "nps"
    assert row["score"] == 0
    assert (row["sentiment"], row["has_sentiment"]) == (-0.75, 1)
    assert row["journey_stage"] == "loyalty"
    assert row["stage_derived"] == 1
    assert row["segment"] == "vip" and row["touchpoint"] == "email_survey"
    assert row["session_id"] == "s9" and row["anonymous_id"] == ""
    assert row["occurred_at"] == int(NOW.timestamp())
    assert row["occurred_ms"] == int(NOW.timestamp() * 1000)
    assert orjson.loads(row["properties"]) == {"survey": "nps", "score": 0, "comment": "awful"}


def test_non_survey_event_has_no_score_and_marks_absent_optionals() -> None:
    event = _event("page_view", {"url": "/p/1", "product_id": "p1"}, journey_stage="purchase")
    row = R.as_dict(R.TOUCHPOINT_EVENTS, R.event_row(event, None, ingested_at=NOW))
    assert (row["survey"], row["score"]) == ("", 0)
    assert row["load_time_ms"] == R.ABSENT and row["wait_s"] == R.ABSENT
    assert (row["sentiment"], row["has_sentiment"]) == (0.0, 0)
    assert None not in row.values()  # no Nullable column anywhere
    assert row["http_status"] == 0
    assert row["product_id"] == "p1"
    # The producer's stage wins over the derived one (consideration for a product view).
    assert (row["journey_stage"], row["stage_derived"]) == ("purchase", 0)


@pytest.mark.parametrize(
    ("event_type", "props", "expected"),
    [
        ("purchase", {"order_id": "o1", "order_value": 19.99, "currency": "EUR"},
         {"order_id": "o1", "order_value": 19.99, "currency": "EUR", "cart_value": 0.0}),
        ("cart_abandon", {"cart_id": "k1", "cart_value": 5.5, "currency": "USD"},
         {"cart_id": "k1", "cart_value": 5.5, "currency": "USD"}),
        ("support_contact", {"contact_id": "x", "reason": "billing", "resolved": True,
                             "wait_s": 0.0},
         {"resolved": 1, "wait_s": 0.0, "reason": "billing"}),
        ("support_contact", {"contact_id": "x", "reason": "late", "resolved": False},
         {"resolved": 0, "wait_s": -1.0}),
        ("page_view", {"url": "/", "load_time_ms": 0, "http_status": 503},
         {"load_time_ms": 0, "http_status": 503, "journey_stage": "awareness"}),
        ("app_error", {"error_code": "E42"}, {"error_code": "E42", "journey_stage": "usage"}),
    ],
)
def test_typed_property_columns(event_type: str, props: dict, expected: dict) -> None:
    row = R.as_dict(R.TOUCHPOINT_EVENTS, R.event_row(_event(event_type, props), None,
                                                     ingested_at=NOW))
    assert {k: row[k] for k in expected} == expected
    assert row["event_type"] == event_type


def test_score_row() -> None:
    update = ScoreUpdate(
        customer_id="c7", experience_score=31.5, churn_risk=0.82,
        journey_stage=JourneyStage.usage, previous_stage=None,
        explanation=[Contribution(signal="detractor", contribution=-12.0, event_id="e1")],
        event_time=NOW, updated_at=NOW + timedelta(milliseconds=5),
    )
    row = R.as_dict(R.CUSTOMER_SCORES, R.score_row(update, ingested_at=NOW))
    decoded = decode_score_update(update.model_dump_json().encode())
    assert R.score_row(decoded, ingested_at=NOW) == tuple(row.values())
    assert row["customer_id"] == "c7" and row["churn_risk"] == 0.82
    assert row["previous_stage"] == ""
    assert row["updated_ms"] - row["event_time_ms"] == 5
    assert orjson.loads(row["explanation"]) == [
        {"signal": "detractor", "contribution": -12.0, "event_id": "e1"}
    ]
    assert row["clv_12m"] == R.ABSENT  # unknown: the update carried none


def test_score_row_stores_the_updates_clv_12m() -> None:
    update = ScoreUpdate(
        customer_id="c8", experience_score=70, churn_risk=0.3, journey_stage=JourneyStage.usage,
        event_time=NOW, updated_at=NOW, clv_12m=412.57,
    )
    decoded = decode_score_update(update.model_dump_json().encode())
    assert decoded.clv_12m == 412.57
    for source in (update, decoded):
        row = R.as_dict(R.CUSTOMER_SCORES, R.score_row(source, ingested_at=NOW))
        assert row["clv_12m"] == 412.57 and isinstance(row["clv_12m"], float)
    zero = R.score_row(decode_score_update(update.model_copy(update={"clv_12m": 0.0})
                                           .model_dump_json().encode()), ingested_at=NOW)
    assert R.as_dict(R.CUSTOMER_SCORES, zero)["clv_12m"] == 0.0  # never bought: 0, not unknown


def test_alert_row() -> None:
    alert = Alert(
        alert_id="a1", rule="detractor_followup", kind=AlertKind.support, customer_id="c1",
        event_time=NOW, emitted_at=NOW + timedelta(seconds=2), experience_score=20,
        churn_risk=0.9, evidence=["e1", "e2"], action="call", context={"score": 3},
        explanation=[Contribution(signal="x", contribution=1.5, event_id="e2")],
    )
    row = R.as_dict(R.ALERTS, R.alert_row(alert, ingested_at=NOW))
    decoded = decode_alert(alert.model_dump_json().encode())
    assert R.alert_row(decoded, ingested_at=NOW) == tuple(row.values())
    assert row["kind"] == "support" and row["evidence"] == ["e1", "e2"]
    assert row["emitted_at"] - row["event_time"] == 2
    assert orjson.loads(row["context"]) == {"score": 3}
    assert orjson.loads(row["explanation"]) == [
        {"signal": "x", "contribution": 1.5, "event_id": "e2"}
    ]


def test_dead_letter_row_keeps_raw_bytes() -> None:
    raw = b"\xff\x00{not json"
    row = R.as_dict(R.DEAD_LETTERS, R.dead_letter_row(
        code="invalid_json", message="bad", topic="cx.touchpoints", partition=3, offset=17,
        received_at=NOW, raw=raw, ingested_at=NOW,
    ))
    assert row["raw"] == raw and row["raw_size"] == len(raw)
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "cx.touchpoints", 3, 17)


def test_dedup_keys_pick_the_identity_columns() -> None:
    event = _event("identify", {})
    row = R.event_row(event, None, ingested_at=NOW)
    assert R.DEDUP_KEYS[R.TOUCHPOINT_EVENTS](row) == "e-identify"


def test_as_dict_rejects_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="columns"):
        R.as_dict(R.ALERTS, ("only", "three", "values"))


@given(
    st.datetimes(
        # hypothesis takes naive bounds and attaches the sampled timezone itself.
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                   timezone(timedelta(hours=-8))]),
    )
)
def test_epoch_conversions_are_exact(moment: datetime) -> None:
    utc = moment.astimezone(timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    expected_ms = (utc - epoch) // timedelta(milliseconds=1)
    assert R.epoch_ms(moment) == expected_ms
    assert R.epoch_s(moment) == expected_ms // 1000


# --- issue 13: every numeric value fits its column; inserts split by partition ---------------

_SQL = Path(__file__).resolve().parents[2] / "sinks" / "sql"


def _ddl(table: str) -> str:
    """The table's CREATE columns, then the columns later migrations add (not MATERIALIZED:
    the writer never sends those), then its ENGINE clause."""
    create = None
    added = []
    for path in sorted(_SQL.glob("*.sql")):
        text = path.read_text()
        match = re.search(rf"CREATE TABLE IF NOT EXISTS {{db}}\.{table}\s*\((.*?)\)\s*ENGINE"
                          r"(.*?);", text, re.S)
        if match:
            create = match
        added += [f"    {name} {kind}" for name, kind, rest in re.findall(
            rf"ALTER TABLE {{db}}\.{table}\s+ADD COLUMN IF NOT EXISTS (\w+) (\w+)([^;]*);",
            text) if "MATERIALIZED" not in rest]
    if create is None:
        raise AssertionError(f"no DDL for {table}")
    return create.group(1).rstrip() + "\n" + "\n".join(added) + "\nENGINE" + create.group(2)


@pytest.mark.parametrize("table", list(R.TABLE_COLUMNS))
def test_numeric_column_types_and_partition_keys_are_the_ddls(table: str) -> None:
    ddl = _ddl(table)
    declared = dict(re.findall(r"^\s*(\w+) (\w+)", ddl.split("\nENGINE")[0], re.M))
    numeric = {name: kind for name, kind in declared.items()
               if kind not in ("String", "Float64", "Array")}
    assert R.NUMERIC_COLUMNS[table] == numeric
    assert f"PARTITION BY toYYYYMM({R.PARTITION_COLUMNS[table]})" in ddl


def _columns(table: str, rows: list[tuple]) -> list:
    return [list(c) for c in zip(*rows, strict=True)]


def test_out_of_range_names_each_row_that_does_not_fit_its_column() -> None:
    event = _event("page_view", {"url": "/", "load_time_ms": 10})
    good = R.event_row(event, None, ingested_at=NOW)
    cols = R.TABLE_COLUMNS[R.TOUCHPOINT_EVENTS]
    load, wait = cols.index("load_time_ms"), cols.index("wait_s")

    def with_(position: int, value: object) -> tuple:
        row = list(good)
        row[position] = value
        return tuple(row)

    rows = [good, with_(load, 10**15), good, with_(wait, 1e300), with_(wait, float("nan")),
            with_(load, 2**31 - 1), with_(cols.index("occurred_at"), -1)]
    bad = R.out_of_range(R.TOUCHPOINT_EVENTS, _columns(R.TOUCHPOINT_EVENTS, rows))
    assert sorted(bad) == [1, 3, 6]
    assert "load_time_ms" in bad[1] and "Int32" in bad[1]
    assert "wait_s" in bad[3] and "Float32" in bad[3]
    assert R.out_of_range(R.TOUCHPOINT_EVENTS, _columns(R.TOUCHPOINT_EVENTS, [good])) == {}


def _alert_at(moment: datetime, n: int) -> tuple:
    alert = decode_alert(Alert(
        alert_id=f"a{n}", rule="r", kind=AlertKind.support, customer_id="c", event_time=moment,
        emitted_at=moment, experience_score=50, churn_risk=0.5, action="x",
    ).to_json())
    return R.alert_row(alert, ingested_at=NOW)


def test_rows_of_one_month_stay_one_insert() -> None:
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rows = [_alert_at(start + timedelta(minutes=n), n) for n in range(500)]
    assert R.split_by_partition(R.ALERTS, rows) == [list(range(500))]


def test_rows_of_120_months_are_split_into_inserts_of_at_most_100_months() -> None:
    rows = [_alert_at(datetime(2010 + n // 12, n % 12 + 1, 15, tzinfo=timezone.utc), n)
            for n in range(120)]
    rows.reverse()
    groups = R.split_by_partition(R.ALERTS, rows)
    assert sorted(i for g in groups for i in g) == list(range(120))
    position = R.TABLE_COLUMNS[R.ALERTS].index("event_time")
    months = [{datetime.fromtimestamp(rows[i][position], timezone.utc).strftime("%Y%m")
               for i in g} for g in groups]
    assert [len(m) for m in months] == [100, 20]
    assert R.split_by_partition(R.ALERTS, rows, limit=1000) == [list(range(120))]
    assert len(R.split_by_partition(R.ALERTS, rows, limit=1)) == 120
