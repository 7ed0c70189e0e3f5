"""Where the worker's time goes, by ``perf``: on-CPU samples of the running worker, summarised.

``py-spy --native`` (:mod:`bench.profile`) stops the process for every sample: on 2026-12-06 it
slowed the worker from ~38,000 to 22,000-24,000 events per CPU second and distorted the shares
(docs/performance.md). ``perf record`` samples with the kernel's timer at a cost the worker does
not notice, and ``--call-graph dwarf`` unwinds each sample's stack afterwards. Needs ``perf``
(Debian: ``linux-perf``) and the right to sample the pid (root, or
``kernel.perf_event_paranoid`` <= 1).

CPython 3.11 has no perf trampoline: interpreted functions show as ``_PyEval_EvalFrameDefault``,
while the mypyc-compiled core shows by name. :func:`owners` therefore charges each sample to
its nearest compiled function (the *owner*), whatever interpreted or C code that function was
running below it (a dict look-up, an allocation, msgspec, the collector), and also reports each
compiled function's inclusive share. :func:`libraries` splits the samples by the library their
leaf runs in. Both read :func:`parse` output and are pure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.profile import compiled_name
from bench.report import ProfileLine

NO_OWNER = "(no compiled frame)"
_COMPILED_PREFIXES = ("CPyDef_", "CPyPy_")


@dataclass(frozen=True)
class Sample:
    """One perf sample: the thread id and its frames, leaf first, as ``(symbol, library)``."""

    tid: int
    frames: tuple[tuple[str, str], ...]


def perf() -> str | None:
    """Path of the perf executable, None if absent."""
    return shutil.which("perf")


def record(pid: int, out: Path, duration_s: float, *, rate_hz: int = 499,
           cpu: int | None = None) -> subprocess.CompletedProcess[str]:
    """Sample every thread of ``pid`` for ``duration_s`` and write ``perf script`` text (one
    block per sample: ``tid``, then ``address symbol (library)`` lines) to ``out``. The raw
    ``perf.data`` (tens of MB) is deleted. Bounded: killed after ``duration_s + 120`` s.
    Raises FileNotFoundError when perf is not installed."""
    exe = perf()
    if exe is None:
        raise FileNotFoundError("perf is not installed (Debian: apt install linux-perf)")
    data = out.with_suffix(".data")
    cmd = [exe, "record", "-F", str(rate_hz), "--call-graph", "dwarf,16384", "-p", str(pid),
           "-o", str(data), "--", "sleep", str(duration_s)]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]  # the sampler off the worker's core
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60,
                              check=False)
        if done.returncode != 0:
            return done
        with out.open("w") as text:
            return subprocess.run([exe, "script", "-i", str(data), "-F", "tid,ip,sym,dso"],
                                  stdout=text, stderr=subprocess.PIPE, text=True, timeout=120,
                                  check=False)
    finally:
        data.unlink(missing_ok=True)


def parse(lines: Iterable[str]) -> list[Sample]:
    """The samples of ``perf script -F tid,ip,sym,dso`` output: a line with the thread id
    starts a sample, each tab-indented ``address symbol (library)`` line under it is a frame,
    leaf first."""
    samples: list[Sample] = []
    frames: list[tuple[str, str]] = []
    tid: int | None = None
    for line in lines:
        if line.startswith("\t"):
            if tid is not None:
                _address, _, rest = line.strip().partition(" ")
                symbol, found, library = rest.rpartition(" (")
                if not found:
                    symbol, library = rest, "?"
                frames.append((symbol, library.rstrip(")").rsplit("/", 1)[-1]))
            continue
        head = line.strip()
        if head.isdigit():
            if tid is not None:
                samples.append(Sample(tid, tuple(frames)))
            tid, frames = int(head), []
    if tid is not None:
        samples.append(Sample(tid, tuple(frames)))
    return samples


def _leaf_library(sample: Sample) -> str:
    """The library the sample's leaf runs in (a function inlined into it belongs to the
    library of the frame it was inlined into)."""
    return next((library for _symbol, library in sample.frames if library != "inlined"), "?")


def _compiled(symbol: str) -> str | None:
    return compiled_name(symbol) if symbol.startswith(_COMPILED_PREFIXES) else None


def owners(samples: Iterable[Sample], *, tid: int | None = None,
           top: int = 25) -> list[ProfileLine]:
    """The compiled functions of thread ``tid`` (every thread: None) by the share of samples
    they own (``self_pct``: nearest compiled frame to the leaf) and by inclusive share
    (``total_pct``). Samples with no compiled frame are owned by :data:`NO_OWNER` plus their
    leaf's library."""
    owned: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    n = 0
    for sample in samples:
        if tid is not None and sample.tid != tid:
            continue
        n += 1
        names = [name for name in (_compiled(s) for s, _lib in sample.frames) if name]
        owned[names[0] if names else f"{NO_OWNER} {_leaf_library(sample)}"] += 1
        for name in set(names):
            inclusive[name] += 1
    if n == 0:
        return []
    return [ProfileLine(function=f, self_pct=round(100.0 * k / n, 1),
                        total_pct=round(100.0 * inclusive.get(f, k) / n, 1))
            for f, k in owned.most_common(top)]


def libraries(samples: Iterable[Sample], *, tid: int | None = None) -> list[tuple[str, float]]:
    """Share of the samples of thread ``tid`` (every thread: None) by the library of the leaf."""
    counts: Counter[str] = Counter()
    for sample in samples:
        if tid is None or sample.tid == tid:
            counts[_leaf_library(sample)] += 1
    n = sum(counts.values())
    return [(library, round(100.0 * k / n, 1)) for library, k in counts.most_common()] if n else []
