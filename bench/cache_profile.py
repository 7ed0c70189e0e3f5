"""Instructions and cache misses of the worker's pipeline, counted, not timed: a noise-free A/B.

``python -m bench.cache_profile`` runs :mod:`bench.pipeline_bench`'s pipeline under Valgrind's
callgrind with its cache simulator, counting only the measured fetches: the warm-up that fills
the states runs uninstrumented (~10x slower than native, where counting is ~100x), and the
counting stops right after the measured fetches drain, before anything is torn down. It prints,
per measured event: instructions, data reads and writes, first-level data misses and last-level
(LL, the L3 here) read and write misses, then the compiled functions (and the C functions the
compiled code calls) by the LL misses they cause, inclusive and self.

Why: this box's speed drifts by +-30 % within minutes (docs/performance.md), so a change worth
1-3 % cannot be seen in timed runs; the counts of the same code repeat within ~0.5 %. What
they do not show is time: a simulated miss is not a stall (the CPU overlaps independent
misses, prefetches sequential ones), so use the counts to find where the misses are and to
compare two versions of the same code, and timed runs for what it is worth.

The wall clock of the counted process is virtual (:class:`VirtualClock`): the same instants in
every run, so two commits score the same work whenever they run. Checkpoints follow the event
count (every ``PipelineLimits.checkpoint_events``, 50,000, as in a live worker at its 80 %
load), not the clock, which callgrind slows a hundredfold anyway.
The caches simulated are the EPYC's of this box: 32 KiB 8-way L1 (instructions and data), 32
MiB 16-way LL (``--ll-mib``). Needs ``valgrind`` (Debian: valgrind, with its ``callgrind.h``)
and a C compiler (the compiled core needs one too). A run at the defaults takes ~10 minutes on
one core; ``--events`` and ``--warm-events`` as in :mod:`bench.pipeline_bench`.

Nothing here is built at import; it needs no service.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

# Switches callgrind's counting on (from zero) and off (and writes the counts) from inside the
# process: Valgrind's client requests, which only C can issue.
_HELPER_C = """\
#include <valgrind/callgrind.h>
void cx_counting_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void cx_counting_off(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
# A function line of ``callgrind_annotate``: nine counts ("1,234 (5.6%)" or "."), then
# "file:function [object]".
_COUNT = r"(?:([\d,]+) \(\s*[\d.]+%\)|\.)"
_LINE = re.compile(r"^\s*" + r"\s+".join([_COUNT] * len(EVENTS))
                   + r"\s+(\S+?):(\S+)(?: \[(.*)\])?\s*$")
_NEVER_MS = 10**9  # no checkpoint by the clock: every checkpoint_events


@dataclass(frozen=True)
class FunctionCost:
    name: str
    counts: dict[str, int]


def build_helper(directory: Path) -> Path:
    """Compile the client-request helper into ``directory``; RuntimeError naming what is
    missing."""
    source = directory / "cx_counting.c"
    library = directory / "cx_counting.so"
    source.write_text(_HELPER_C)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) on PATH: it builds the helper that switches "
                           "callgrind's counting on and off")
    done = subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("could not build the callgrind helper (is valgrind's callgrind.h "
                           f"installed? Debian: valgrind):\n{done.stderr.strip()}")
    return library


def callgrind_command(out_file: Path, inner_args: list[str], ll_mib: int,
                      module: str = "bench.cache_profile") -> list[str]:
    """The valgrind command line that runs ``module``'s inner mode (this module's, or
    :mod:`bench.sink_cost`'s)."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--cache-sim=yes",
            "--I1=32768,8,64", "--D1=32768,8,64", f"--LL={ll_mib * 1024 * 1024},16,64",
            f"--callgrind-out-file={out_file}", sys.executable, "-m", module,
            "--inner", *inner_args]


@contextlib.contextmanager
def counted_run(module: str, inner: list[str], ll_mib: int,
                keep: Path | None) -> Iterator[Path]:
    """Run ``module``'s inner mode under callgrind (its counting switched by the helper built
    here) and yield the counting window's dump (in a temporary directory, removed after;
    ``keep``: copied there too). Exits with a message when the helper or the run fails."""
    with tempfile.TemporaryDirectory(prefix="cx-counted-") as tmp:
        directory = Path(tmp)
        try:
            helper = build_helper(directory)
        except RuntimeError as exc:
            sys.exit(f"error: {exc}")
        command = callgrind_command(directory / "callgrind.out",
                                    [*inner, "--helper", str(helper)], ll_mib, module=module)
        print("running:", " ".join(command), flush=True)
        paths = [str(Path(__file__).resolve().parent.parent),
                 *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        done = subprocess.run(command, env=env, stderr=subprocess.DEVNULL)
        dumps = sorted(directory.glob("callgrind.out.*"))
        if done.returncode != 0 or not dumps:
            sys.exit(f"error: the counted run failed (exit {done.returncode}); run the command "
                     "above to see valgrind's output")
        dump = dumps[0]  # the counting window's dump (the process's own final one is empty)
        if keep is not None:
            shutil.copy(dump, keep)
            print(f"callgrind dump kept: {keep}")
        yield dump


def read_totals(dump: Path) -> dict[str, int]:
    """The ``totals:`` of a callgrind dump, by event name."""
    names: list[str] = []
    for line in dump.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("totals:"):
            return dict(zip(names, map(int, line.split()[1:]), strict=True))
    raise ValueError(f"{dump}: no totals line (callgrind did not finish its dump)")


def parse_annotate(text: str) -> list[FunctionCost]:
    """Function lines of ``callgrind_annotate`` output, one per line: a function listed under
    several files (code inlined from headers) comes once per file (:func:`functions` merges)."""
    rows: list[FunctionCost] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        counts = {e: int(v.replace(",", "")) if v else 0
                  for e, v in zip(EVENTS, m.groups()[:len(EVENTS)], strict=True)}
        rows.append(FunctionCost(m.group(len(EVENTS) + 2), counts))
    return rows


def functions(rows: list[FunctionCost], inclusive: bool) -> list[FunctionCost]:
    """One cost per function name: the largest of its lines when inclusive (the others are
    the parts inlined from headers, already in it), their sum when self."""
    merged: dict[str, dict[str, int]] = {}
    for row in rows:
        have = merged.get(row.name)
        if have is None:
            merged[row.name] = dict(row.counts)
        elif inclusive:
            if row.counts["Ir"] > have["Ir"]:
                merged[row.name] = dict(row.counts)
        else:
            for e in EVENTS:
                have[e] += row.counts[e]
    return [FunctionCost(name, counts) for name, counts in merged.items()]


def readable(name: str) -> str:
    """A mypyc C name as module.function: ``CPyDef_engine___Engine___process`` ->
    ``engine.Engine.process``."""
    for prefix in ("CPyDef_", "CPyPy_"):
        if name.startswith(prefix):
            return name[len(prefix):].replace("___", ".")
    return name


def report(totals: dict[str, int], incl: list[FunctionCost], self_: list[FunctionCost],
           events: int, top: int) -> list[str]:
    """The printed table: totals per event, then the top functions by LL misses."""
    def per(n: int) -> str:
        return f"{n / events:,.1f}"
    lines = [f"per measured event ({events:,} events):",
             f"  instructions {per(totals['Ir'])}, data reads {per(totals['Dr'])}, "
             f"writes {per(totals['Dw'])}",
             f"  L1 misses: instructions {per(totals['I1mr'])}, data reads {per(totals['D1mr'])},"
             f" writes {per(totals['D1mw'])}",
             f"  LL misses: data reads {per(totals['DLmr'])}, writes {per(totals['DLmw'])}"]
    for title, rows, only_compiled in (("inclusive, compiled functions", incl, True),
                                       ("self, any function", self_, False)):
        chosen = [r for r in rows if not only_compiled or r.name.startswith("CPyDef_")]
        chosen.sort(key=lambda r: -(r.counts["DLmr"] + r.counts["DLmw"]))
        lines.append(f"LL misses per event by function ({title}): reads, writes, instructions")
        for r in chosen[:top]:
            c = r.counts
            lines.append(f"  {per(c['DLmr']):>7} {per(c['DLmw']):>7} {per(c['Ir']):>10}  "
                         f"{readable(r.name)}")
    return lines


# The counted run's wall clock: a fixed Wednesday noon (UTC) that moves on by FETCH_STEP_S at
# every fetch. The simulated events end at "now", and what the rules do depends on the time of
# day (quiet hours defer marketing alerts in each customer's time zone), so with the real
# clock two runs an hour apart scored different work (7,226 against 6,720 outputs).
VIRTUAL_START_S = 1_767_787_200.0  # 2026-01-07T12:00:00Z
FETCH_STEP_S = 0.08  # a live fetch's wait (CX_FETCH_MAX_WAIT_MS)


class VirtualClock:
    """``datetime.now`` and ``time.time`` for the pipeline and the event generator: the same
    instants in every run (see above). :meth:`install` patches the modules that read them."""

    def __init__(self, start_s: float = VIRTUAL_START_S, step_s: float = FETCH_STEP_S) -> None:
        self.now_s = start_s
        self.step_s = step_s
        self.reads = 0

    def time(self) -> float:
        return self.now_s

    def datetime_class(self) -> type[datetime]:
        clock = self

        class VirtualDatetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
                clock.reads += 1
                at = datetime.fromtimestamp(clock.now_s, tz)
                clock.now_s += clock.step_s
                return at

        return VirtualDatetime

    def install(self, set_attribute: Callable[[object, str, object], None] = setattr) -> None:
        """Patch ``datetime`` in the pipeline and the generator and ``time.time`` (process-wide:
        the inner, counted process only; tests pass ``monkeypatch.setattr``)."""
        import bench.pipeline_bench
        import streams.pipeline

        virtual = self.datetime_class()
        set_attribute(streams.pipeline, "datetime", virtual)
        set_attribute(bench.pipeline_bench, "datetime", virtual)
        set_attribute(time, "time", self.time)


def _inner(args: argparse.Namespace) -> None:
    from bench.pipeline_bench import fetches, run_once
    from cxsignals.gc_tuning import WORKER_YOUNG_ALLOCATIONS, tune_collector
    from streams.config import WorkerConfig
    from streams.huge_pages import use_huge_pages

    helper = ctypes.CDLL(args.helper)
    VirtualClock().install()
    print("huge pages: off (--no-huge-pages)" if args.no_huge_pages else use_huge_pages())
    tune_collector(WORKER_YOUNG_ALLOCATIONS)
    config = WorkerConfig(checkpoint_interval_ms=_NEVER_MS)
    warm, measured = fetches(args.events, args.customers, args.seed, args.batch,
                             args.warm_events)
    print(f"warming {args.warm_events:,} events uninstrumented, then counting {args.events:,}",
          flush=True)
    run = run_once(warm + measured, config, len(warm),
                   window=(helper.cx_counting_on, helper.cx_counting_off))
    print(f"counted {run.events:,} events: {run.fetches} fetches, {run.outputs:,} outputs, "
          f"{run.state_writes:,} state writes", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="events counted")
    parser.add_argument("--warm-events", type=int, default=700_000,
                        help="events scored first, uncounted (full states)")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=2000, help="records a fetch")
    parser.add_argument("--ll-mib", type=int, default=32, help="simulated last-level cache")
    parser.add_argument("--top", type=int, default=20, help="functions listed")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the callgrind dump here (for callgrind_annotate, kcachegrind)")
    parser.add_argument("--no-huge-pages", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args)
        return
    if args.events < 1 or args.warm_events < 0:
        parser.error("--events must be >= 1 and --warm-events >= 0")
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found (Debian: apt-get install valgrind)")
    inner = ["--events", str(args.events), "--warm-events", str(args.warm_events),
             "--customers", str(args.customers), "--seed", str(args.seed),
             "--batch", str(args.batch)] + (["--no-huge-pages"] if args.no_huge_pages else [])
    with counted_run("bench.cache_profile", inner, args.ll_mib, args.keep) as dump:
        totals = read_totals(dump)
        annotate = [shutil.which("callgrind_annotate") or "callgrind_annotate", "--auto=no",
                    "--threshold=100"]
        incl = parse_annotate(subprocess.run([*annotate, "--inclusive=yes", str(dump)],
                                             capture_output=True, text=True, check=True).stdout)
        self_ = parse_annotate(subprocess.run([*annotate, str(dump)], capture_output=True,
                                              text=True, check=True).stdout)
    print("\n".join(report(totals, functions(incl, inclusive=True),
                           functions(self_, inclusive=False), args.events, args.top)))


if __name__ == "__main__":
    main()
