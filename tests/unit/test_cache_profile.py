"""bench/cache_profile.py: counting only the measured fetches, and reading callgrind's output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.cache_profile import (
    VIRTUAL_START_S,
    FunctionCost,
    VirtualClock,
    functions,
    main,
    parse_annotate,
    read_totals,
    readable,
    report,
)
from bench.pipeline_bench import fetches, run_once
from streams.config import WorkerConfig


def _line(counts: tuple[int | None, ...], name: str) -> str:
    """One line as callgrind_annotate prints it: "1,234 (5.6%)" per event, "." for none."""
    cells = ["." if n is None else f"{n:,} ( 1.00%)" for n in counts]
    return "  " + "  ".join(f"{c:>16}" for c in cells) + "  " + name


# callgrind_annotate --auto=no output: a header, the totals, then "file:function [object]".
ANNOTATE = "\n".join([
    "-" * 80,
    "Ir  Dr  Dw  I1mr  D1mr  D1mw  ILmr  DLmr  DLmw  file:function",
    "-" * 80,
    _line((1_000_000, 400_000, 200_000, 5_000, 9_000, 3_000, 10, 900, 600), " PROGRAM TOTALS"),
    _line((700_000, 300_000, 100_000, 4_000, 8_000, 2_000, 8, 500, 300),
          "/b/native.c:CPyDef_engine___Engine___process [/b/native.so]"),
    _line((5_000, 1_000, 1_000, 10, 20, None, None, 4, None),
          "/py/object.h:CPyDef_engine___Engine___process"),
    _line((100_000, 50_000, 40_000, 100, 900, 800, 1, 300, 250),
          "./string/memmove.S:__memcpy_avx_unaligned_erms [/lib/libc.so.6]"),
])


def test_annotate_lines_become_costs_per_function() -> None:
    rows = parse_annotate(ANNOTATE)
    assert [r.name for r in rows] == ["CPyDef_engine___Engine___process"] * 2 + [
        "__memcpy_avx_unaligned_erms"]
    assert rows[0].counts["Ir"] == 700_000 and rows[0].counts["DLmw"] == 300
    assert rows[1].counts["D1mw"] == 0 and rows[1].counts["DLmr"] == 4  # "." is zero
    inclusive = {f.name: f.counts for f in functions(rows, inclusive=True)}
    assert inclusive["CPyDef_engine___Engine___process"]["DLmr"] == 500  # the largest line
    own = {f.name: f.counts for f in functions(rows, inclusive=False)}
    assert own["CPyDef_engine___Engine___process"]["DLmr"] == 504  # the lines summed


def test_totals_are_read_from_the_dump(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("version: 1\nevents: Ir DLmr DLmw\nsummary: 0\ntotals: 1200 30 12\n")
    assert read_totals(dump) == {"Ir": 1200, "DLmr": 30, "DLmw": 12}
    (tmp_path / "cut").write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no totals"):
        read_totals(tmp_path / "cut")


def test_the_report_is_per_event_and_ranks_by_last_level_misses() -> None:
    assert readable("CPyDef_processing___Processor___pending_writes") == \
        "processing.Processor.pending_writes"
    assert readable("__memcpy_avx_unaligned_erms") == "__memcpy_avx_unaligned_erms"
    totals = {"Ir": 2000, "Dr": 400, "Dw": 200, "I1mr": 40, "D1mr": 80, "D1mw": 20,
              "ILmr": 0, "DLmr": 10, "DLmw": 6}
    small = {**{e: 0 for e in totals}, "Ir": 100, "DLmr": 1}
    big = {**{e: 0 for e in totals}, "Ir": 50, "DLmr": 4, "DLmw": 4}
    rows = [FunctionCost("CPyDef_a___f", small), FunctionCost("CPyDef_b___g", big),
            FunctionCost("memcpy", big)]
    lines = report(totals, rows, rows, events=2, top=5)
    assert "instructions 1,000.0" in lines[1] and "writes 3.0" in lines[3]
    inclusive = lines[lines.index(next(x for x in lines if "inclusive" in x)) + 1:][:2]
    assert inclusive[0].endswith("b.g") and inclusive[1].endswith("a.f")  # compiled only
    assert any(x.endswith("memcpy") for x in lines)  # the self list has any function


def test_the_window_opens_after_the_warm_fetches_and_closes_after_the_drain() -> None:
    warm, measured = fetches(600, 60, seed=5, batch=200, warm_events=600)
    calls: list[str] = []
    run = run_once(warm + measured, WorkerConfig(), len(warm),
                   window=(lambda: calls.append("on"), lambda: calls.append("off")))
    assert calls == ["on", "off"] and run.events == 600


def test_the_virtual_clock_makes_two_runs_score_the_same_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runs, clocks = [], []
    for _ in range(2):
        clock = VirtualClock()
        clock.install(monkeypatch.setattr)
        warm, measured = fetches(400, 40, seed=9, batch=100, warm_events=400)
        first = next(iter(measured[0].values()))[0]
        run = run_once(warm + measured, WorkerConfig(), len(warm))
        runs.append((run.events, run.fetches, run.outputs, run.state_writes, first.value,
                     first.timestamp))
        clocks.append(clock)
    assert runs[0] == runs[1]  # same events, same outputs and state writes
    assert all(c.reads > len(measured) for c in clocks)  # the compiled pipeline read it
    assert clocks[0].now_s == clocks[1].now_s > VIRTUAL_START_S


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("cc") is None
                    or not Path("/usr/include/valgrind/callgrind.h").exists(),
                    reason="needs valgrind with callgrind.h and a C compiler")
def test_a_small_counted_run_reports_its_events(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--events", "300", "--warm-events", "600", "--customers", "50", "--batch", "300",
          "--top", "200"])
    out = capsys.readouterr().out
    assert "per measured event (300 events)" in out
    # parsed from callgrind's real output: the engine counted, inclusive, by its readable name
    assert "  engine.Engine.process\n" in out
