"""bench/pipeline_bench.py: the pipeline without Kafka handles every record it is given."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bench.pipeline_bench import TimedEngine, fetches, main, run_once
from cxsignals.gc_tuning import WORKER_YOUNG_ALLOCATIONS
from streams.app import build_engine
from streams.config import WorkerConfig
from streams.core.validation import Invalid, validate_event


def _valid(value: bytes | None) -> bool:
    """Whether the worker scores this message (the pipeline's own verdict)."""
    return not isinstance(validate_event(value, now=datetime.now(timezone.utc)), Invalid)


def test_every_record_is_handled_and_each_customer_written_once_per_checkpoint() -> None:
    _warm, batches = fetches(3_000, 200, seed=3, batch=1_000)
    records = [r for fetch in batches for recs in fetch.values() for r in recs]
    assert len(records) == 3_000
    assert all(sum(map(len, fetch.values())) <= 1_000 for fetch in batches)
    keys = {r.key for r in records if r.key}
    # a known customer with a valid event always has a state; an anonymous id may have none
    # (its events went to the customer it was linked to), so the simulated mix sets the count
    known = {r.key for r in records if r.key and r.key.startswith(b"c-") and _valid(r.value)}
    assert len(known) >= 100
    run = run_once(batches, WorkerConfig())
    assert run.events == 3_000
    assert run.fetches == len(batches) and run.outputs > 0
    # every customer's state written once by the final drain at least, at most once per fetch
    assert len(known) <= run.state_writes <= len(keys) * (len(batches) + 1)
    assert run.cpu_us_per_event > 0


def test_warm_fetches_fill_the_states_and_are_not_counted() -> None:
    warm, measured = fetches(1_000, 100, seed=3, batch=500, warm_events=2_000)
    assert sum(len(r) for f in warm for r in f.values()) == 2_000
    assert sum(len(r) for f in measured for r in f.values()) == 1_000
    # the measured records follow the warm ones on each partition
    last_warm = {tp: recs[-1].offset for f in warm for tp, recs in f.items()}
    assert all(recs[0].offset > last_warm.get(tp, -1) for f in measured[:1]
               for tp, recs in f.items())
    run = run_once(warm + measured, WorkerConfig(), len(warm))
    assert run.events == 1_000 and run.fetches == len(measured)
    # the warm fetches' customers are written again only when the measured events change them
    assert 0 < run.state_writes <= 100 * len(measured) + 100


def test_main_prints_the_median_of_its_repeats(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tuned: list[int] = []
    # the worker's collector settings, not applied to the test process
    monkeypatch.setattr("bench.pipeline_bench.tune_collector", tuned.append)
    main(["--events", "1000", "--customers", "50", "--batch", "500", "--repeats", "2"])
    assert tuned == [WORKER_YOUNG_ALLOCATIONS]
    out = capsys.readouterr().out
    assert out.count("repeat ") == 2
    assert "median " in out and "fetches of 500" in out


def test_the_engine_is_timed_per_event_type_from_the_first_measured_fetch() -> None:
    warm, measured = fetches(1_000, 100, seed=3, batch=500, warm_events=1_000)
    timed = TimedEngine(build_engine(WorkerConfig()))
    run = run_once(warm + measured, WorkerConfig(), len(warm), timed)
    # every valid, new measured event went through the engine once, none of the warm ones
    assert 0 < sum(timed.counts.values()) <= run.events
    assert sum(timed.counts.values()) > 0.95 * run.events
    assert "page_view" in timed.counts and all(s > 0 for s in timed.seconds.values())
    lines = timed.table()
    assert lines[0].startswith(f"engine by event type ({sum(timed.counts.values()):,} events")
    assert len(lines) == 1 + len(timed.counts)


def test_main_prints_the_engine_by_event_type_when_asked(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.pipeline_bench.tune_collector", lambda _n: None)
    main(["--events", "600", "--customers", "40", "--batch", "300", "--repeats", "1",
          "--warm-events", "600", "--by-type"])
    out = capsys.readouterr().out
    assert out.count("repeat ") == 1  # the timed run is not one of the repeats
    assert "engine by event type" in out and "page_view" in out
    assert out.index("median ") < out.index("engine by event type")


def test_a_run_with_nothing_left_to_measure_is_refused() -> None:
    warm, _measured = fetches(100, 20, seed=3, batch=50, warm_events=200)
    with pytest.raises(ValueError, match="none to measure"):
        run_once(warm, WorkerConfig(), len(warm))
