"""The sink against the real ClickHouse server (CLICKHOUSE_URL, default the local 18.16 one).

Each test run uses its own database (dropped at the end). No mocks: outages are real closed
ports, and recovery is a real TCP proxy that starts listening only after a delay.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from cxsignals import migrate_cmd
from cxsignals.settings import ClickHouseParams, Settings
from schemas.alerts import Alert, AlertKind, Contribution
from schemas.events import JourneyStage, touchpoint_adapter
from schemas.scores import ScoreUpdate
from sinks import rows as R
from sinks.clickhouse import ClickHouseWriter
from sinks.migrations import apply_migrations, load_migrations, parse_version
from sinks.queries import (
    COUNTER_NAMES,
    CUTS,
    collect_report,
    counters_by_cut,
    counters_sql,
    kpis,
    rollup_counters_sql,
)
from sinks.retry import RetriesExhausted, RetryPolicy, RetryStopped

pytestmark = pytest.mark.integration

URL = os.environ.get("CLICKHOUSE_URL", "clickhouse://default:@127.0.0.1:9000/cx")
PARAMS = ClickHouseParams.from_url(URL)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
CHANNELS = ("web", "app", "store", "call_center")
SEGMENTS = ("new", "regular", "vip")


def _client(port: int | None = None) -> Client:
    return Client(host=PARAMS.host, port=port or PARAMS.port, user=PARAMS.user,
                  password=PARAMS.password, connect_timeout=2, send_receive_timeout=30)


@pytest.fixture(scope="module")
def admin() -> Iterator[Client]:
    client = _client()
    client.execute("SELECT 1")
    yield client
    client.disconnect()


@pytest.fixture(scope="module")
def server_version(admin: Client) -> tuple[int, ...]:
    return parse_version(str(admin.execute("SELECT version()")[0][0]))


@pytest.fixture()
def database(admin: Client, server_version: tuple[int, ...]) -> Iterator[str]:
    name = f"cx_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")
    apply_migrations(admin.execute, server_version=server_version, database=name)
    yield name
    admin.execute(f"DROP DATABASE IF EXISTS {name}")


class Recorder:
    """A WriterObserver that keeps every call, to assert on the metrics hooks."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.inserts: list[tuple[str, float]] = []
        self.batches: list[int] = []
        self.retries: list[tuple[str, int, float]] = []
        self.failures: list[tuple[str, BaseException]] = []

    def rows_written(self, table: str, rows: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows

    def insert_seconds(self, table: str, seconds: float) -> None:
        self.inserts.append((table, seconds))

    def batch_rows(self, rows: int) -> None:
        self.batches.append(rows)

    def retry(self, table: str, failures: int, error: BaseException, delay_s: float) -> None:
        self.retries.append((table, failures, delay_s))

    def failure(self, table: str, error: BaseException) -> None:
        self.failures.append((table, error))


def _writer(database: str, *, port: int | None = None, retry: RetryPolicy | None = None,
            observer: Recorder | None = None, check_ranges: bool = True) -> ClickHouseWriter:
    return ClickHouseWriter(_client(port), database=database, retry=retry, observer=observer,
                            check_ranges=check_ranges)


def _events(count: int, seed: int = 1) -> list[tuple[Any, float | None]]:
    """Seeded mix of every event type over the last 5 hours, with sentiment for comments."""
    rng = random.Random(seed)
    out: list[tuple[Any, float | None]] = []
    for i in range(count):
        kind = rng.choice(("nps", "csat", "ces", "checkout_started", "cart_abandon", "purchase",
                           "support_contact", "page_view", "app_error", "payment_failed"))
        props: dict[str, Any]
        sentiment = None
        if kind in ("nps", "csat", "ces"):
            low, high = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[kind]
            props = {"survey": kind, "score": rng.randint(low, high)}
            if rng.random() < 0.5:
                props["comment"] = "text"
                sentiment = round(rng.uniform(-1, 1), 3)
            event_type = "survey_answer"
        elif kind == "checkout_started":
            event_type, props = kind, {"cart_id": f"k{i}", "cart_value": 10.0, "currency": "EUR"}
        elif kind == "cart_abandon":
            event_type, props = kind, {"cart_id": f"k{i}", "cart_value": 12.5, "currency": "EUR"}
        elif kind == "purchase":
            event_type, props = kind, {"order_id": f"o{i}",
                                       "order_value": float(rng.randint(1, 99)),
                                       "currency": rng.choice(("EUR", "USD"))}
        elif kind == "support_contact":
            event_type, props = kind, {"contact_id": f"t{i}", "reason": "billing",
                                       "resolved": rng.random() < 0.6, "wait_s": 30.0}
        elif kind == "page_view":
            event_type, props = kind, {"url": "/p", "load_time_ms": rng.randint(50, 3000),
                                       **({"product_id": "p1"} if rng.random() < 0.5 else {})}
        elif kind == "app_error":
            event_type, props = kind, {"error_code": "E1"}
        else:
            event_type, props = kind, {"reason": "card declined"}
        event = touchpoint_adapter.validate_python({
            "event_id": f"ev-{seed}-{i}",
            "schema_version": 1,
            "occurred_at": (NOW - timedelta(minutes=rng.randint(0, 300))).isoformat(),
            "customer_id": f"c{rng.randint(1, 40)}",
            "channel": rng.choice(CHANNELS),
            "touchpoint": rng.choice(("home", "checkout", "hotline")),
            "segment": rng.choice(SEGMENTS),
            "event_type": event_type,
            "properties": props,
        })
        out.append((event, sentiment))
    return out


def _event_rows(events: list[tuple[Any, float | None]]) -> list[R.Row]:
    return [R.event_row(event, sentiment, ingested_at=NOW) for event, sentiment in events]


def _alert(i: int, rule: str) -> R.Row:
    return R.alert_row(Alert(
        alert_id=f"a{i}", rule=rule, kind=AlertKind.support, customer_id=f"c{i}",
        event_time=NOW, emitted_at=NOW, experience_score=30.0, churn_risk=0.7,
        explanation=[Contribution(signal="detractor", contribution=-9.0, event_id="e")],
        evidence=[f"ev-{i}"], action="call",
    ), ingested_at=NOW)


def _window() -> dict[str, int]:
    return {"since_s": int(NOW.timestamp()) - 7 * 3600, "until_s": int(NOW.timestamp()) + 3600}


def _execute(admin: Client) -> Any:
    return lambda sql, params: admin.execute(sql, params)


def _schema(admin: Client, database: str) -> list[tuple[Any, ...]]:
    return admin.execute(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = %(db)s ORDER BY name", {"db": database})


def test_every_migration_applies_on_the_server_and_twice_changes_nothing(
    admin: Client, server_version: tuple[int, ...]
) -> None:
    name = f"cx_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        first = apply_migrations(admin.execute, server_version=server_version, database=name)
        before = _schema(admin, name)
        second = apply_migrations(admin.execute, server_version=server_version, database=name)
        expected = [m.name for m in load_migrations() if m.supported_by(server_version)]
        assert first == expected and second == []
        assert _schema(admin, name) == before
        columns: dict[str, list[str]] = {}
        for table, column, kind in admin.execute(
            "SELECT table, name, default_kind FROM system.columns WHERE database = %(db)s",
            {"db": name},
        ):
            if kind != "MATERIALIZED":
                columns.setdefault(table, []).append(column)
        for table, names in R.TABLE_COLUMNS.items():
            assert columns[table] == list(names), table
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")


def test_columnar_write_reads_back(admin: Client, database: str) -> None:
    events = _events(60)
    recorder = Recorder()
    score = R.score_row(ScoreUpdate(
        customer_id="c1", experience_score=40, churn_risk=0.5, journey_stage=JourneyStage.usage,
        event_time=NOW, updated_at=NOW), ingested_at=NOW)
    valued = R.score_row(ScoreUpdate(
        customer_id="c2", experience_score=70, churn_risk=0.2, journey_stage=JourneyStage.usage,
        event_time=NOW, updated_at=NOW, clv_12m=412.57), ingested_at=NOW)
    dead = R.dead_letter_row(code="invalid_json", message="bad", topic="cx.touchpoints",
                             partition=1, offset=99, received_at=NOW, raw=b"\xff{", ingested_at=NOW)
    batch = {R.TOUCHPOINT_EVENTS: _event_rows(events), R.ALERTS: [_alert(1, "r1")],
             R.CUSTOMER_SCORES: [score, valued], R.DEAD_LETTERS: [dead]}
    stats = _writer(database, observer=recorder).write(batch)
    assert stats.rows == {t: len(r) for t, r in batch.items()} and stats.retries == 0
    assert recorder.rows == stats.rows and recorder.batches == [64]
    assert {t for t, _ in recorder.inserts} == set(batch)

    cols = ", ".join(R.TABLE_COLUMNS[R.TOUCHPOINT_EVENTS])
    stored = admin.execute(f"SELECT {cols} FROM {database}.touchpoint_events ORDER BY event_id")
    expected = sorted(batch[R.TOUCHPOINT_EVENTS])
    assert len(stored) == len(expected)
    for got, want in zip(stored, expected, strict=True):
        got_d = R.as_dict(R.TOUCHPOINT_EVENTS, got)
        want_d = R.as_dict(R.TOUCHPOINT_EVENTS, want)
        for key in ("occurred_at", "ingested_at"):
            got_d[key] = int(got_d[key].timestamp())
        for key in ("sentiment", "wait_s"):  # Float32 columns
            assert got_d[key] == pytest.approx(want_d[key], rel=1e-6)
            got_d[key] = want_d[key]
        want_d["properties"] = want_d["properties"].decode()  # JSON written as UTF-8 bytes
        assert got_d == want_d
    raw = admin.execute(f"SELECT raw, raw_size, source_offset FROM {database}.dead_letters")
    assert raw == [(b"\xff{", 2, 99)]
    # clv_12m (migration 0011): the update's value, -1 when it carried none.
    assert admin.execute(
        f"SELECT customer_id, churn_risk, clv_12m FROM {database}.customer_scores "
        "ORDER BY customer_id") == [("c1", 0.5, -1.0), ("c2", 0.2, 412.57)]


def test_a_dead_letter_with_an_unknown_source_position_is_stored(
    admin: Client, database: str
) -> None:
    dead = R.dead_letter_row(code="processing_error", message="m", topic="cx.touchpoints.dlq",
                             partition=-1, offset=-1, received_at=NOW, raw=b"{}", ingested_at=NOW)
    _writer(database).write({R.DEAD_LETTERS: [dead]})
    assert admin.execute(
        f"SELECT source_partition, source_offset FROM {database}.dead_letters") == [(-1, -1)]


def test_the_same_batch_twice_leaves_no_duplicate_in_results(admin: Client, database: str) -> None:
    batch = {R.TOUCHPOINT_EVENTS: _event_rows(_events(500, seed=2)),
             R.ALERTS: [_alert(i, "r1") for i in range(20)]}
    writer = _writer(database)
    writer.write(batch)
    writer.write(batch)  # a redelivery after a crash between insert and offset commit
    events = admin.execute(
        f"SELECT count(), uniqExact(event_id) FROM {database}.touchpoint_events FINAL")
    alerts = admin.execute(f"SELECT count(), uniqExact(alert_id) FROM {database}.alerts FINAL")
    assert events == [(500, 500)] and alerts == [(20, 20)]
    # Without FINAL the unmerged copy is visible: FINAL is what makes reads exact.
    assert admin.execute(f"SELECT count() FROM {database}.touchpoint_events")[0][0] >= 500


def _python_counters(events: list[tuple[Any, float | None]], cut: str | None) -> dict[str, Any]:
    """The counters recomputed in Python from the events, per cut value."""
    out: dict[str, dict[str, float]] = {}
    for event, sentiment in events:
        row = R.as_dict(R.TOUCHPOINT_EVENTS, R.event_row(event, sentiment, ingested_at=NOW))
        key = "" if cut is None else str(row[CUTS[cut]])
        c = out.setdefault(key, dict.fromkeys(COUNTER_NAMES, 0.0))
        c["events"] += 1
        survey, score, etype = row["survey"], row["score"], row["event_type"]
        if survey == "nps":
            c["nps_promoters" if score >= 9 else "nps_passives" if score >= 7
              else "nps_detractors"] += 1
        elif survey in ("csat", "ces"):
            top = 4 if survey == "csat" else 5
            c[f"{survey}_sum"] += score
            c[f"{survey}_count"] += 1
            c["csat_4_5" if survey == "csat" else "ces_5_7"] += score >= top
        if sentiment is not None:
            c["sentiment_sum"] += sentiment
            c["sentiment_count"] += 1
        names = {"checkout_started": "checkouts_started", "cart_abandon": "carts_abandoned",
                 "purchase": "purchases", "payment_failed": "payment_failures",
                 "app_error": "app_errors", "support_contact": "support_contacts"}
        if etype in names:
            c[names[etype]] += 1
        if etype == "support_contact" and row["resolved"]:
            c["support_resolved"] += 1
    return out


@pytest.mark.parametrize("cut", [None, *CUTS])
def test_rollup_kpis_equal_those_recomputed_from_raw_rows(
    admin: Client, database: str, cut: str | None
) -> None:
    events = _events(3000, seed=3)
    _writer(database).write({R.TOUCHPOINT_EVENTS: _event_rows(events)})
    params = _window()
    raw = counters_by_cut(admin.execute(counters_sql(database, cut), params))
    rollup = counters_by_cut(admin.execute(rollup_counters_sql(database, cut), params))
    python = _python_counters(events, cut)
    assert set(raw) == set(rollup) == set(python)
    for key in raw:
        raw_kpis, rollup_kpis, py_kpis = (kpis(x[key]) for x in (raw, rollup, python))
        assert raw_kpis == pytest.approx(rollup_kpis, rel=1e-6, nan_ok=True)
        # Sentiment is stored as Float32: compare it loosely, everything else exactly.
        assert raw_kpis.pop("sentiment_mean") == pytest.approx(
            py_kpis.pop("sentiment_mean"), abs=1e-4)
        assert raw_kpis == pytest.approx(py_kpis, rel=1e-9)


def test_report_reads_latest_scores_alerts_and_funnel(admin: Client, database: str) -> None:
    def update(customer: str, risk: float, at_ms: int, signal: str) -> R.Row:
        moment = NOW + timedelta(milliseconds=at_ms)
        return R.score_row(ScoreUpdate(
            customer_id=customer, experience_score=100 * (1 - risk), churn_risk=risk,
            journey_stage=JourneyStage.usage, event_time=moment, updated_at=moment,
            explanation=[Contribution(signal=signal, contribution=-5.0, event_id="x"),
                         Contribution(signal="purchase", contribution=3.0, event_id="y")],
        ), ingested_at=NOW)

    events = _events(400, seed=4)
    writer = _writer(database)
    writer.write({
        R.TOUCHPOINT_EVENTS: _event_rows(events),
        # c1 was at high risk and recovered; c2 is the riskiest now.
        R.CUSTOMER_SCORES: [update("c1", 0.95, 0, "detractor"), update("c1", 0.10, 5, "x"),
                            update("c2", 0.80, 1, "unresolved_contact")],
        R.ALERTS: [_alert(i, "detractor_followup") for i in range(3)] + [_alert(9, "cart")],
    })
    writer.write({R.ALERTS: [_alert(0, "detractor_followup")]})  # redelivered alert
    window = _window()
    report = collect_report(_execute(admin), database=database, by="stage", top_n=2,
                            since_s=window["since_s"], until_s=window["until_s"])
    assert [c["customer_id"] for c in report["top_churn"]] == ["c2", "c1"]
    assert report["top_churn"][0]["top_reasons"] == ["unresolved_contact"]
    assert report["top_churn"][1]["churn_risk"] == pytest.approx(0.10)
    assert {(a["rule"], a["alerts"]) for a in report["alerts"]} == {
        ("detractor_followup", 3), ("cart", 1)}
    reached: dict[str, set[str]] = {}
    for event, _ in events:
        reached.setdefault(event.stage.value, set()).add(event.customer_id)
    assert [s["customers"] for s in report["funnel"]] == [
        len(reached.get(stage.value, ())) for stage in JourneyStage]
    assert report["overall"]["events"] == len(events)
    assert {r["currency"] for r in report["revenue"]} <= {"EUR", "USD"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_writer_at_a_closed_port_retries_then_a_bounded_policy_gives_up(database: str) -> None:
    recorder = Recorder()
    policy = RetryPolicy(attempts=3, initial_delay_s=0.01, max_delay_s=0.05)
    writer = _writer(database, port=_closed_port(), retry=policy, observer=recorder)
    with pytest.raises(RetriesExhausted) as caught:
        writer.write({R.ALERTS: [_alert(1, "r")]})
    assert isinstance(caught.value.last_error, ch_errors.NetworkError)
    assert len(recorder.failures) == 3 and len(recorder.retries) == 2
    assert recorder.rows == {}


def test_stop_ends_an_unbounded_retry_without_writing(database: str) -> None:
    writer = _writer(database, port=_closed_port(),
                     retry=RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2))
    threading.Timer(0.5, writer.stop).start()
    started = time.monotonic()
    with pytest.raises(RetryStopped):
        writer.write({R.ALERTS: [_alert(1, "r")]})
    assert time.monotonic() - started < 5


class LateProxy:
    """Listens on ``port`` only after ``delay_s``, then forwards to the real server."""

    def __init__(self, port: int, delay_s: float) -> None:
        self.port = port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(delay_s,), daemon=True)
        self._thread.start()

    def _serve(self, delay_s: float) -> None:
        time.sleep(delay_s)
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen()
            listener.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection((PARAMS.host, PARAMS.port))
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def test_writer_waits_for_clickhouse_and_writes_the_batch_once_it_is_back(
    admin: Client, database: str
) -> None:
    port = _closed_port()
    proxy = LateProxy(port, delay_s=1.5)
    recorder = Recorder()
    try:
        writer = _writer(database, port=port, observer=recorder,
                         retry=RetryPolicy(initial_delay_s=0.05, max_delay_s=0.3))
        batch = {R.TOUCHPOINT_EVENTS: _event_rows(_events(200, seed=5))}
        stats = writer.write(batch)
    finally:
        proxy.close()
    assert stats.retries >= 2 and stats.rows == {R.TOUCHPOINT_EVENTS: 200}
    assert admin.execute(
        f"SELECT count(), uniqExact(event_id) FROM {database}.touchpoint_events FINAL"
    ) == [(200, 200)]


def test_migrate_command_applies_and_reports_unreachable(
    capsys: pytest.CaptureFixture[str], admin: Client
) -> None:
    parser = argparse.ArgumentParser()
    migrate_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["migrate"])
    name = f"cx_test_{uuid.uuid4().hex[:10]}"
    url = f"clickhouse://{PARAMS.user}:{PARAMS.password}@{PARAMS.host}:{PARAMS.port}/{name}"
    try:
        assert args.func(args, Settings(clickhouse_url=url)) == 0
        assert "applied  0001_touchpoint_events" in capsys.readouterr().out
        assert args.func(args, Settings(clickhouse_url=url)) == 0
        assert "schema is up to date" in capsys.readouterr().out
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
    closed = f"clickhouse://default:@127.0.0.1:{_closed_port()}/{name}"
    assert args.func(args, Settings(clickhouse_url=closed)) == 2
    assert "unreachable" in capsys.readouterr().err


# --- issue 13: nothing halts the writer on the real server --------------------------------


def test_a_batch_of_120_months_is_written_in_blocks_of_at_most_100_partitions(
    admin: Client, database: str
) -> None:
    """18.16 has no max_partitions_per_insert_block; the split is the same as on modern
    servers (tests/unit/test_sink_chdb.py shows those refuse one block of 120 months)."""
    rows = []
    for n in range(120):
        event = touchpoint_adapter.validate_python({
            "event_id": f"m{n}", "schema_version": 1, "customer_id": "c1", "channel": "web",
            "occurred_at": datetime(2015 + n // 12, n % 12 + 1, 3, tzinfo=timezone.utc),
            "event_type": "page_view", "properties": {"url": "/"}})
        rows.append(R.event_row(event, None, ingested_at=NOW))
    recorder = Recorder()
    stats = _writer(database, observer=recorder).write({R.TOUCHPOINT_EVENTS: rows})
    assert stats.rejected == [] and len(recorder.inserts) == 2
    assert admin.execute(
        f"SELECT count(), uniqExact(toYYYYMM(occurred_at)) FROM {database}.touchpoint_events"
    ) == [(120, 120)]


def test_rows_the_server_cannot_take_are_bisected_out_and_the_rest_is_written(
    admin: Client, database: str
) -> None:
    """With the writer's own range check switched off, clickhouse-driver's TypeMismatchError
    (the error of issue 13) reaches the bisection: exactly the bad rows are rejected."""
    rows = _event_rows(_events(1000, seed=7))
    load = R.TABLE_COLUMNS[R.TOUCHPOINT_EVENTS].index("load_time_ms")
    wait = R.TABLE_COLUMNS[R.TOUCHPOINT_EVENTS].index("wait_s")
    bad = {17: (load, 10**15), 400: (wait, 1e300), 401: (load, -(2**40))}
    for index, (position, value) in bad.items():
        row = list(rows[index])
        row[position] = value
        rows[index] = tuple(row)
    stats = _writer(database, check_ranges=False).write({R.TOUCHPOINT_EVENTS: rows})
    assert sorted(r.index for r in stats.rejected) == sorted(bad)
    assert {r.code for r in stats.rejected} == {53}
    assert stats.rows[R.TOUCHPOINT_EVENTS] == 997
    assert stats.attempts <= 1 + 3 * 2 * 10
    stored = {e for (e,) in admin.execute(f"SELECT event_id FROM {database}.touchpoint_events")}
    assert stored == {row[0] for n, row in enumerate(rows) if n not in bad}
