"""The pure parts of the benchmark harness: percentiles, rate windows, the result document, the
table, and the py-spy summary."""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.e2e import _figures
from bench.profile import IDLE, parse, summarize, threads
from bench.report import (
    SCHEMA,
    BenchResult,
    BrokerWarmup,
    Ceiling,
    EndToEnd,
    Git,
    Latency,
    Machine,
    Params,
    ProcessFigures,
    box_capacity_per_s,
    core_demand,
    cpu_use,
    format_table,
    latency_by_second,
    latency_stats,
    percentile,
    result_path,
    step_changes,
    sustained_rate,
    table_rows,
)
from bench.run import LATENCY_LOADS, PRESETS, neighbours, parse_args, worker_cores

# ---------------------------------------------------------------------------- percentile


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 25) == pytest.approx(1.75)
    assert percentile([10, 20, 30, 40, 50], 50) == 30
    assert percentile([5, 1, 3], 0) == 1
    assert percentile([5, 1, 3], 100) == 5
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200), st.integers(1, 99))
def test_percentile_matches_statistics_inclusive(values: list[float], q: int) -> None:
    expected = statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    assert percentile(values, q) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_latency_by_second_groups_by_the_triggers_second() -> None:
    samples = [(10_000.0, 20.0), (10_999.0, 40.0), (11_000.0, 300.0), (12_500.0, 260.0),
               (11_200.0, 30.0), (10_500.0, 30.0)]
    seconds = latency_by_second(samples, goal_ms=250.0)
    assert [(s.second, s.count, s.max_ms, s.over_goal) for s in seconds] == [
        (0, 3, 40.0, 0), (1, 2, 300.0, 1), (2, 1, 260.0, 1)]
    assert seconds[0].p50_ms == 30.0
    assert latency_by_second([], goal_ms=250.0) == []


def test_latency_stats() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    stats = latency_stats(values)
    assert stats.count == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p99_ms == pytest.approx(99.0, abs=0.1)
    assert stats.max_ms == 100.0
    empty = latency_stats([])
    assert (empty.count, empty.p50_ms, empty.p99_ms, empty.max_ms) == (0, None, None, None)


# ---------------------------------------------------------------------------- rate window


def test_sustained_rate_skips_warmup_and_drain() -> None:
    # 10 s of start-up at 10 ev/s, then 1000 ev/s, then a slow tail.
    samples = [(float(t), 10.0 * t) for t in range(10)]
    samples += [(10.0 + t, 100.0 + 1000.0 * t) for t in range(1, 10)]
    samples += [(20.0, 9_600.0), (21.0, 9_800.0), (30.0, 10_000.0)]
    window = sustained_rate(samples, 10_000)
    assert window is not None
    assert window.per_s == pytest.approx(1000.0)
    assert window.start_count >= 1_000
    assert window.end_count <= 9_500


def test_a_step_counter_is_timed_between_its_steps_not_between_samples() -> None:
    # committed offsets: sampled every 0.25 s, a commit of 25,000 every second (at 0.9, 1.9...)
    commits = [(0.9, 25_000.0), (1.9, 50_000.0), (2.9, 75_000.0), (3.9, 100_000.0)]
    samples = [(i * 0.25, max([c for t, c in commits if t <= i * 0.25], default=0.0))
               for i in range(18)]
    # between samples the window starts and ends inside steps: 50,000 in 2.75 s, -27 %
    raw = sustained_rate(samples, 100_000)
    assert raw is not None and raw.per_s < 0.8 * 25_000
    changes = step_changes(samples)
    assert [c for _t, c in changes] == [0.0, 25_000.0, 50_000.0, 75_000.0, 100_000.0]
    window = sustained_rate(changes, 100_000)
    assert window is not None
    assert window.per_s == pytest.approx(25_000.0, rel=0.01)  # 25,000 a commit, 1 s apart
    # a single step inside the window: no rate at all, rather than 0 or a spike
    assert sustained_rate(step_changes([(0.0, 0.0), (0.5, 50_000.0), (3.0, 50_000.0),
                                        (3.5, 100_000.0)]), 100_000) is None


def test_sustained_rate_needs_two_samples_in_the_window() -> None:
    assert sustained_rate([(0.0, 0.0), (1.0, 10_000.0)], 10_000) is None
    assert sustained_rate([], 100) is None
    with pytest.raises(ValueError):
        sustained_rate([(0.0, 0.0)], 10, warmup_fraction=0.9, end_fraction=0.5)


# ---------------------------------------------------------------------------- result document


def _result(**figures: object) -> BenchResult:
    start = datetime(2026, 11, 23, 15, 7, tzinfo=timezone.utc)
    return BenchResult(
        started_at=start, finished_at=start + timedelta(minutes=9),
        git=Git(commit="a" * 40, short="aaaaaaa", dirty=False),
        machine=Machine(nproc=2, memory_bytes=8 << 30, cpu_model="x", python="3.11.2",
                        platform="linux", kafka_bootstrap="127.0.0.1:9092"),
        params=Params(events=1000, customers=100, bad_share=0.001, seed=7,
                      touchpoint_partitions=4, latency_s=10, latency_warmup_s=1,
                      poll_ms=100, sink_rows=10, decode_n=10, engine_events=10,
                      engine_customers=10, sink_batch_rows=50_000, sink_batch_ms=1000,
                      phases=["e2e"]),
        **figures,
    )


def _e2e(rate: float) -> EndToEnd:
    return EndToEnd(
        events=1000, customers=100, valid_events=999, startup_s=3.0,
        seconds_to_all_handled=4.0, events_per_s_metrics=rate, events_per_s_lag=rate * 0.9,
        ratio_to_ceiling=0.5, handled=1000, dead_letters=1, alerts=3, score_updates=7,
        clickhouse_rows=999, clickhouse_seconds_to_all_rows=2.0, clickhouse_rows_per_s=500.0,
    )


def test_result_json_round_trips_with_schema_tag() -> None:
    result = _result(ceiling=Ceiling(events=1000, invalid=1, seconds=0.1, events_per_s=10_000),
                     end_to_end=_e2e(250.0), errors={"sink": "RuntimeError: boom"})
    text = result.to_json()
    doc = json.loads(text)
    assert doc["schema"] == SCHEMA
    assert doc["git"]["commit"] == "a" * 40
    assert doc["end_to_end"]["events_per_s_metrics"] == 250.0
    assert doc["latency"] is None
    again = BenchResult.model_validate_json(text)
    assert again == result


def _process(role: str, pid: int, cpu: int, events_per_s: float) -> ProcessFigures:
    return ProcessFigures(role=role, pid=pid, cpu=cpu, startup_s=2.0, events=10_000,
                          seconds=10_000 / events_per_s, events_per_s=events_per_s, cpu_s=0.5,
                          cpu_utilization=0.9, events_per_cpu_s=20_000.0, loop_lag_max_s=0.012)


def _latency(rate: float, alert_p99_ms: float, fraction: float) -> Latency:
    return Latency(rate_per_s=rate, published=1000, measured_after_s=1,
                   event_to_alert=latency_stats([10.0, 20.0, alert_p99_ms]),
                   event_to_row=latency_stats([300.0, 1_500.0]), alerts_seen=3,
                   alerts_without_trigger=0, row_samples=2, rows_not_seen=0, poll_ms=100,
                   event_to_alert_by_rule={"repeat_contact": latency_stats([alert_p99_ms])},
                   load_fraction=fraction, published_per_s=rate * 0.99,
                   worker_loop_lag_max_s=0.05, sink_loop_lag_max_s=0.2)


def test_new_figures_round_trip_beside_the_old_names() -> None:
    e2e = _e2e(12_000.0).model_copy(update={
        "workers": 2, "sink_events_per_cpu_s": 30_000.0, "worker_loop_lag_max_s": 0.04,
        "sink_loop_lag_max_s": 0.3,
        "processes": [_process("worker", 11, 0, 6_000), _process("worker", 12, 1, 6_000),
                      _process("sink", 13, 1, 12_000)],
    })
    result = _result(end_to_end=e2e, latency=_latency(6_000, 120.0, 0.5),
                     latency_80=_latency(9_600, 300.0, 0.8))
    doc = json.loads(result.to_json())
    # Today's names keep their meaning: the worker(s) rate and the half-load latency.
    assert doc["end_to_end"]["events_per_s_metrics"] == 12_000.0
    assert doc["latency"]["load_fraction"] == 0.5
    assert doc["latency_80"]["load_fraction"] == 0.8
    assert doc["latency_80"]["event_to_alert_by_rule"]["repeat_contact"]["max_ms"] == 300.0
    assert [p["role"] for p in doc["end_to_end"]["processes"]] == ["worker", "worker", "sink"]
    assert doc["params"]["workers"] == 1  # defaults keep older documents readable
    assert BenchResult.model_validate_json(result.to_json()) == result


def test_a_document_without_the_new_fields_still_reads() -> None:
    doc = json.loads(_result(end_to_end=_e2e(3_000.0),
                             latency=_latency(1_500, 100.0, 0.5)).to_json())
    for key in ("workers", "sink_events_per_cpu_s", "worker_loop_lag_max_s",
                "sink_loop_lag_max_s", "processes"):
        del doc["end_to_end"][key]
    for key in ("load_fraction", "published_per_s", "worker_loop_lag_max_s",
                "sink_loop_lag_max_s", "processes", "event_to_alert_by_rule"):
        del doc["latency"][key]
    for key in ("workers", "worker_cpus", "sink_cpu", "latency_loads"):
        del doc["params"][key]
    del doc["latency_80"]
    old = BenchResult.model_validate(doc)
    assert old.end_to_end is not None and old.end_to_end.workers == 1
    assert old.latency_80 is None
    assert "3 publish->alert p99" in {name for name, _v, _n in table_rows(old)}


def test_result_rejects_a_malformed_document() -> None:
    doc = json.loads(_result().to_json())
    del doc["git"]
    with pytest.raises(ValidationError):
        BenchResult.model_validate(doc)
    doc = json.loads(_result().to_json())
    doc["machine"]["nproc"] = 0
    with pytest.raises(ValidationError):
        BenchResult.model_validate(doc)


def test_result_path_is_utc_stamp_and_sha() -> None:
    cest = timezone(timedelta(hours=2))
    path = result_path(Path("bench/results"), datetime(2026, 11, 23, 17, 7, 5, tzinfo=cest),
                       "abc1234")
    assert path == Path("bench/results/20261123T150705Z-abc1234.json")
    with pytest.raises(ValueError):
        result_path(Path("."), datetime(2026, 11, 23), "abc1234")  # noqa: DTZ001 (the point)


# ---------------------------------------------------------------------------- table


def test_table_marks_goals_and_failures() -> None:
    lat = latency_stats([100.0, 120.0, 400.0])
    result = _result(
        end_to_end=_e2e(25_000.0),
        latency=Latency(rate_per_s=100, published=1000, measured_after_s=1, event_to_alert=lat,
                        event_to_row=latency_stats([900.0]), alerts_seen=3,
                        alerts_without_trigger=0, row_samples=1, rows_not_seen=0, poll_ms=100),
        decode={"us_per_event": 7.5},
        errors={"sink": "boom"},
    )
    rows = {name: (value, note) for name, value, note in table_rows(result)}
    assert rows["2 e2e sustained (counters)"][0] == "25,000 ev/s"
    assert rows["2 e2e sustained (counters)"][1].startswith("ok")
    assert rows["3 publish->alert p99"][1].startswith("MISS")  # 394 ms > 250 ms
    assert rows["3 publish->alert max"][0] == "400.0 ms"
    assert rows["5 decode + validate"][1].startswith("MISS")  # 7.5 us > 5 us
    assert rows["! sink"][0] == "FAILED"
    assert rows["2 e2e sustained (group lag)"] == ("22,500 ev/s", "")


def test_table_says_why_the_group_lag_rate_is_missing() -> None:
    e2e = _e2e(25_000.0).model_copy(update={"events_per_s_lag": None})
    rows = {name: (value, note) for name, value, note in table_rows(_result(end_to_end=e2e))}
    value, note = rows["2 e2e sustained (group lag)"]
    assert value == "-"
    assert "fewer than two group commits" in note
    assert "4 sink alone" not in rows


def test_table_shows_both_loads_each_process_and_loop_lag() -> None:
    e2e = _e2e(12_000.0).model_copy(update={
        "workers": 2, "sink_events_per_cpu_s": 30_000.0, "worker_loop_lag_max_s": 0.04,
        "sink_loop_lag_max_s": 0.3,
        "processes": [_process("worker", 11, 0, 5_000), _process("worker", 12, 1, 7_000),
                      _process("sink", 13, 1, 12_000)],
    })
    result = _result(end_to_end=e2e, latency=_latency(6_000, 120.0, 0.5),
                     latency_80=_latency(9_600, 300.0, 0.8))
    rows = {name: (value, note) for name, value, note in table_rows(result)}
    assert rows["2 e2e sustained (counters) (2 workers)"][1].startswith("MISS")  # < 15,000
    assert rows["2 worker 0 (cpu 0)"][0] == "5,000 ev/s"
    assert rows["2 worker 1 (cpu 1)"][0] == "7,000 ev/s"
    assert rows["2 sink per CPU second"] == ("30,000 ev/s", "CPU use 0.90")
    assert rows["2 worker event-loop lag max"][0] == "40.0 ms"
    assert rows["2 sink event-loop lag max"][0] == "300.0 ms"
    assert rows["3 publish->alert p99"][1].startswith("ok")
    assert rows["3 publish->alert p99 (80%)"][1].startswith("MISS")
    # no sink histogram in these runs: the poll's p99 is the figure checked
    assert rows["3 publish->ClickHouse row p99 (poll) (80%)"][1].startswith("MISS")  # > 1 s
    assert rows["3 latency load (80%)"] == ("9,600 ev/s", "published 9,504 ev/s")
    assert rows["3 event-loop lag max (80%)"] == ("50.0 ms", "sink 200.0 ms")


def test_table_shows_what_the_worker_could_score_against_each_latency_load() -> None:
    worker, sink = _process("worker", 11, 0, 5_000), _process("sink", 13, 1, 5_000)
    result = _result(
        latency=_latency(6_000, 120.0, 0.5).model_copy(update={"processes": [worker, sink]}),
        latency_80=_latency(24_000, 300.0, 0.8).model_copy(update={"processes": [worker, sink]}))
    rows = {name: (value, note) for name, value, note in table_rows(result)}
    # 20,000 events per CPU second: enough for 6,000 ev/s, not for 24,000
    assert rows["3 worker per CPU second"] == ("20,000 ev/s", "CPU use 0.90")
    assert rows["3 worker per CPU second (80%)"] == (
        "20,000 ev/s", "CPU use 0.90; below its load: it fell behind")
    two = _latency(24_000, 300.0, 0.8).model_copy(update={"processes": [
        worker, _process("worker", 12, 1, 5_000), sink]})
    rows = {name: (value, note) for name, value, note in table_rows(_result(latency_80=two))}
    assert rows["3 worker 0 per CPU second (80%)"] == ("20,000 ev/s", "CPU use 0.90")
    assert "3 worker 1 per CPU second (80%)" in rows


def test_table_shows_how_busy_the_worker_was_while_the_load_was_published() -> None:
    # The phase's span also waits for the last ClickHouse rows: a worker at its limit while
    # publishing shows a lower utilization over the span.
    worker = _process("worker", 11, 0, 5_000).model_copy(
        update={"cpu_utilization": 0.78, "cpu_utilization_publishing": 0.95})
    result = _result(latency_80=_latency(6_000, 300.0, 0.8).model_copy(
        update={"processes": [worker, _process("sink", 13, 1, 5_000)]}))
    rows = {name: (value, note) for name, value, note in table_rows(result)}
    assert rows["3 worker per CPU second (80%)"] == (
        "20,000 ev/s", "CPU use 0.78 (0.95 while publishing)")


def test_process_figures_divide_the_publishing_cpu_by_the_publishing_time() -> None:
    proc: Any = SimpleNamespace(role="worker", pid=11, cpu=0, ready_s=3.0, started_s=1.0)
    f = _figures(proc, events=30_000, seconds=40.0, cpu_s=31.2, loop_lag_max_s=0.05,
                 publishing=(28.5, 30.0))
    assert (f.cpu_utilization, f.cpu_utilization_publishing) == (0.78, 0.95)
    assert f.startup_s == 2.0
    assert _figures(proc, events=1, seconds=1.0, cpu_s=None, loop_lag_max_s=None,
                    publishing=(None, 30.0)).cpu_utilization_publishing is None
    assert _figures(proc, events=1, seconds=1.0, cpu_s=0.5,
                    loop_lag_max_s=None).cpu_utilization_publishing is None


def test_cpu_use_costs_the_whole_phase_per_published_event() -> None:
    # 30 s of publishing 600,000 events; 9 CPU s while publishing, 12 by the time all settled
    use = cpu_use("kafka", 7, 1, before_s=100.0, published_s=109.0, settled_s=112.0,
                  publish_wall_s=30.0, events=600_000)
    assert (use.cpu_utilization_publishing, use.us_per_event) == (0.3, 20.0)
    gone = cpu_use("clickhouse", 8, 1, before_s=5.0, published_s=None, settled_s=None,
                   publish_wall_s=30.0, events=600_000)
    assert (gone.cpu_utilization_publishing, gone.us_per_event) == (None, None)
    assert cpu_use("harness", 9, None, before_s=1.0, published_s=2.0, settled_s=3.0,
                   publish_wall_s=0.0, events=0).us_per_event is None


def test_core_demand_adds_the_processes_of_each_core_at_the_phase_rate() -> None:
    budget = [
        cpu_use("worker", 1, 0, before_s=0.0, published_s=27.0, settled_s=30.0,
                publish_wall_s=30.0, events=900_000),  # 33.33 us an event
        cpu_use("sink", 2, 1, before_s=0.0, published_s=11.0, settled_s=18.0,
                publish_wall_s=30.0, events=900_000),  # 20 us
        cpu_use("kafka", 3, 1, before_s=0.0, published_s=12.0, settled_s=13.5,
                publish_wall_s=30.0, events=900_000),  # 15 us
        cpu_use("prometheus", 4, None, before_s=0.0, published_s=0.9, settled_s=0.9,
                publish_wall_s=30.0, events=900_000),  # 1 us
        cpu_use("gone", 5, 1, before_s=None, published_s=None, settled_s=None,
                publish_wall_s=30.0, events=900_000),
    ]
    assert core_demand(budget, 30_000.0) == {"any": 0.03, "cpu 0": 1.0, "cpu 1": 1.05}
    result = _result(latency_80=_latency(30_000, 300.0, 0.8).model_copy(update={
        "cpu_budget": budget, "core_demand": core_demand(budget, 30_000.0)}))
    rows = {name: (value, note) for name, value, note in table_rows(result)}
    value, note = rows["3 cores needed at this load (80%)"]
    assert value == "any: 0.03, cpu 0: 1.00, cpu 1: 1.05"
    assert note.startswith("cpu 1 over 1: cannot keep up; worker 33.3, sink 20.0, kafka 15.0")
    # cpu 1's 35 us an event fill it at 28,571 ev/s; cpu 0's 33.3 us at 30,000; all 69.3 us
    # over two cores at 28,848
    assert box_capacity_per_s(budget, 2) == 28_571.4
    assert box_capacity_per_s(budget, 1) == 14_423.8  # one core for everything
    assert box_capacity_per_s(budget[3:], 2) == 2_000_000.0  # only the unpinned one
    assert box_capacity_per_s(budget[4:], 2) is None
    assert result.latency_80 is not None
    with_capacity = result.latency_80.model_copy(update={"capacity_per_s": 28_571.4})
    rows = {name: (value, note) for name, value, note in
            table_rows(_result(latency_80=with_capacity))}
    assert rows["3 rate the box sustains at these costs (80%)"] == (
        "28,571 ev/s", "its first core 100 % busy; the load is 1.05 of it")
    fits = _result(latency=_latency(6_000, 120.0, 0.5).model_copy(update={
        "cpu_budget": budget[:1], "core_demand": core_demand(budget[:1], 6_000.0)}))
    value, note = {n: (v, c) for n, v, c in table_rows(fits)}["3 cores needed at this load"]
    assert (value, note) == ("cpu 0: 0.20", "worker 33.3 us/event")
    assert "3 cores needed at this load" not in dict(
        (n, v) for n, v, _ in table_rows(_result(latency=_latency(6_000, 120.0, 0.5))))


def test_the_table_says_how_long_the_broker_was_warmed() -> None:
    warm = BrokerWarmup(seconds=35.2, rate_per_s=16_000.0, published=560_000,
                        compiler_cpu_s=14.53, compiler_share_by_window=[0.61, 0.44, 0.01, 0.004],
                        quiet=True)
    rows = {name: (value, note) for name, value, note in table_rows(_result(broker_warmup=warm))}
    assert rows["3 broker JIT warm-up"] == (
        "35 s", "at 16,000 ev/s, compiler threads 14.5 CPU s; quiet")
    late = warm.model_copy(update={"quiet": False})
    rows = {name: (value, note) for name, value, note in table_rows(_result(broker_warmup=late))}
    assert rows["3 broker JIT warm-up"][1].endswith("NOT quiet by the time limit")
    assert "3 broker JIT warm-up" not in {name for name, _, _ in table_rows(_result())}


def test_the_neighbours_are_the_local_services_with_a_pid_file_and_the_harness(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import bench.run as run

    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "kafka.pid").write_text("4242\n")
    (tmp_path / ".state" / "clickhouse.pid").write_text("4343\n")
    monkeypatch.setattr(run, "REPO_ROOT", tmp_path)
    assert neighbours(["kafka"], [1], 1) == [
        ("kafka", 4242, 1), ("clickhouse", 4343, None), ("harness", os.getpid(), 1)]
    # moved to two cores: not pinned to one
    assert neighbours(["kafka", "clickhouse"], [1, 2], None)[:2] == [
        ("kafka", 4242, None), ("clickhouse", 4343, None)]


def test_format_table_aligns_values() -> None:
    text = format_table([("short", "1 ev/s", ""), ("a much longer name", "12,345 ev/s", "ok")])
    lines = text.splitlines()
    assert lines[0].startswith("figure")
    assert set(lines[1]) == {"-"}
    value_ends = {line.index("ev/s") + len("ev/s") for line in lines[2:]}
    assert len(value_ends) == 1  # right-aligned values end in the same column
    assert format_table([]) == ""


# ---------------------------------------------------------------------------- profile summary

COLLAPSED = """\
thread (1): MainThread;run (/usr/lib/python3.11/asyncio/base_events.py:600);select (/usr/lib/python3.11/selectors.py:468) 50
thread (1): MainThread;run (/usr/lib/python3.11/asyncio/base_events.py:600);process (/x/site-packages/faust/streams.py:10);to_bytes (/x/site-packages/streams/core/state.py:104) 30
thread (1): MainThread;run (/usr/lib/python3.11/asyncio/base_events.py:600);process (/x/site-packages/faust/streams.py:11) 20
thread (2): Thread-1;serve (/usr/lib/python3.11/socketserver.py:1);EpollSelector.select (/usr/lib/python3.11/selectors.py:468) 100
"""  # noqa: E501


def test_profile_summary_self_total_and_idle() -> None:
    stacks = parse(COLLAPSED.splitlines())
    lines = {line.function: line for line in summarize(stacks)}
    assert lines[IDLE].self_pct == 50.0
    to_bytes = lines["streams/core/state.py:to_bytes"]
    assert (to_bytes.self_pct, to_bytes.total_pct) == (30.0, 30.0)
    process = lines["faust/streams.py:process"]
    assert (process.self_pct, process.total_pct) == (20.0, 50.0)  # two lines, one function
    summary = {t.name: t for t in threads(stacks)}
    assert summary["MainThread"].busy_samples == 50
    assert summary["Thread-1"].busy_samples == 0  # idle in Class.select


NATIVE = """\
thread (1): MainThread;0x7f61d524524a (libc.so.6);_run (/x/site-packages/faust/worker.py:1);CPyPy_engine___Engine___process (__native__native.c:10);CPyDef_engine___Engine___process (__native__native.c:20);Py_DECREF (object.h:537);CPyDef_rule_plan___evaluate_event (__native__native.c:30) 40
thread (1): MainThread;0x7f61d524524a (libc.so.6);_run (/x/site-packages/faust/worker.py:1);CPyPy_engine___Engine___process (__native__native.c:10);CPyDef_engine___Engine___process (__native__native.c:21);Py_DECREF (object.h:537) 35
thread (1): MainThread;0x7f61d524524a (libc.so.6);_run (/x/site-packages/faust/worker.py:1);CPyDef_pipeline___handle_ScoringPipeline_gen_____mypyc_generator_helper__ (__native__native.c:5);0x7f61d52a4193 (libc.so.6) 15
thread (1): MainThread;0x7f61d524524a (libc.so.6);_run (/x/site-packages/faust/worker.py:1);select_epoll_poll_impl (selectmodule.c:1);epoll_wait (libc.so.6) 10
"""  # noqa: E501


def test_profile_names_compiled_functions_and_folds_inlined_helpers() -> None:
    stacks = parse(NATIVE.splitlines())
    lines = {line.function: line for line in summarize(stacks)}
    assert lines[IDLE].self_pct == 10.0  # epoll_wait, a wait seen in C
    rules = lines["[compiled] rule_plan:evaluate_event"]
    assert (rules.self_pct, rules.total_pct) == (40.0, 40.0)
    # Its Python-callable wrapper and its C entry are one function; the inlined Py_DECREF is
    # its own code, so the 35 samples in it are the engine's self time.
    process = lines["[compiled] engine:Engine.process"]
    assert (process.self_pct, process.total_pct) == (35.0, 75.0)
    assert not any("Py_DECREF" in name for name in lines)
    assert lines["libc.so.6:(unnamed)"].self_pct == 15.0
    assert "[compiled] pipeline:handle_ScoringPipeline_gen" in stacks[2][1]  # a coroutine


# ---------------------------------------------------------------------------- arguments


def test_presets_fill_only_what_was_not_given() -> None:
    args = parse_args(["--quick", "--events", "1234"])
    assert args.events == 1234
    assert args.customers == PRESETS["quick"]["customers"]
    default = parse_args([])
    assert (default.events, default.customers) == (
        PRESETS["default"]["events"], PRESETS["default"]["customers"])
    assert parse_args(["--full"]).events == 500_000
    assert parse_args(["--phases", "decode, sink"]).phases == ["decode", "sink"]
    with pytest.raises(SystemExit):
        parse_args(["--phases", "nope"])


def test_latency_loads_pick_the_runs() -> None:
    assert parse_args([]).latency_loads == ["latency", "latency_80"]
    assert parse_args(["--latency-loads", "50"]).latency_loads == ["latency"]
    assert parse_args(["--latency-loads", "80,50"]).latency_loads == ["latency", "latency_80"]
    for bad in ("60", "", "half"):
        with pytest.raises(SystemExit):
            parse_args(["--latency-loads", bad])


def test_workers_and_their_cores() -> None:
    assert LATENCY_LOADS == {"latency": 0.5, "latency_80": 0.8}
    one = parse_args([])
    assert one.workers == 1
    assert worker_cores(one, 0, 2) == [0]
    assert worker_cores(one, None, 2) == [None]
    three = parse_args(["--workers", "3"])
    assert worker_cores(three, 0, 2) == [0, 1, 0]
    assert worker_cores(parse_args(["--workers", "2", "--worker-cpus", "0,0"]), 0, 2) == [0, 0]
    with pytest.raises(SystemExit):
        parse_args(["--workers", "2", "--worker-cpus", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


def test_histogram_quantiles_interpolate_like_promql() -> None:
    import math

    from bench.report import histogram_quantile, histogram_stats

    # 100 observations: 50 within 0.1 s, 40 more within 0.5 s, 10 more within 1 s
    after = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(after, 0.5) == 0.1
    assert math.isclose(histogram_quantile(after, 0.99) or 0.0, 0.95)
    assert histogram_quantile({0.1: 0.0, math.inf: 0.0}, 0.5) is None
    # in the +Inf bucket: the highest finite bound
    assert histogram_quantile({0.1: 1.0, math.inf: 10.0}, 0.99) == 0.1
    # only what was observed between the two scrapes counts
    stats = histogram_stats({0.1: 50.0, 0.5: 50.0, 1.0: 50.0, math.inf: 50.0}, after)
    assert stats.count == 50
    assert stats.p50_ms == round((0.1 + 0.4 * 25 / 40) * 1000, 1)


def test_the_sink_histogram_is_the_row_figure_checked_when_there_is_one() -> None:
    from bench.report import LatencyStats

    lat = _latency(6_000, 120.0, 0.5).model_copy(update={
        "event_to_row_sink": LatencyStats(count=500, p50_ms=300.0, p99_ms=900.0)})
    rows = {name: (value, note) for name, value, note in table_rows(_result(latency=lat))}
    assert rows["3 publish->ClickHouse row p99 (sink)"] == ("900.0 ms", rows[
        "3 publish->ClickHouse row p99 (sink)"][1])
    assert rows["3 publish->ClickHouse row p99 (sink)"][1].startswith("ok")  # <= 1,000 ms
    # the poll (1,500 ms here) is shown as the upper bound it is, not checked
    assert rows["3 publish->ClickHouse row p99 (poll)"][1] == "an upper bound"
