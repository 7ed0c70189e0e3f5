"""Where the worker's time goes: py-spy sampling of the running worker, summarised.

:func:`record` attaches ``py-spy record --format raw --threads --idle --full-filenames --native``
to a pid for a bounded time (py-spy must be installed in the venv: ``pip install py-spy``; it
needs ptrace rights, i.e. root or ``kernel.yama.ptrace_scope=0``). ``--native`` shows the
functions of the mypyc-compiled core (without it their time lands on the Python function that
called into them): :func:`parse` names them ``[compiled] module:Class.method``, folds the
CPython header helpers inlined into them (``Py_DECREF (object.h)``, which the unwinder reports
as frames) into their caller and merges libc's unnamed addresses. :func:`summarize` is pure:
it reads the collapsed stacks and returns the main (event-loop) thread's top functions by self
time and by inclusive time, as percentages of all of that thread's samples, idle ones included,
so that "idle" says how much headroom the loop had.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.report import ProfileLine
from cxsignals.settings import REPO_ROOT

# Leaf functions where a thread waits rather than works (event loop poll, locks, queues).
IDLE_LEAVES = frozenset({"select", "poll", "epoll", "wait", "sleep", "get", "accept", "_worker",
                         # the same waits seen in C (``--native``)
                         "epoll_wait", "pthread_cond_wait", "pthread_cond_timedwait",
                         "sem_timedwait", "clock_nanosleep", "nanosleep"})
IDLE = "(idle: waiting in select/poll/locks)"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\S+\): (?P<name>.*)$")


def py_spy() -> str | None:
    """Path of the py-spy executable next to this interpreter, or on PATH; None if absent."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, out: Path, duration_s: float, *, rate_hz: int = 100,
           cpu: int | None = None, native: bool = True) -> subprocess.CompletedProcess[str]:
    """Sample ``pid`` for ``duration_s`` into ``out`` (collapsed stacks; with the native frames
    of compiled code unless ``native`` is False). Bounded: killed after ``duration_s + 60`` s.
    Raises FileNotFoundError when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed: .venv/bin/pip install py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))),
           "--rate", str(rate_hz), "--format", "raw", "--threads", "--idle",
           "--full-filenames", "--output", str(out)]
    if native:
        cmd.append("--native")
    if cpu is not None and shutil.which("taskset"):
        # Keep the sampler off the worker's core so it does not steal the worker's CPU.
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60,
                          check=False)


def short_location(path: str) -> str:
    """A readable file name: the part after site-packages/, else after the repo, else as is."""
    for marker in ("site-packages/", f"{REPO_ROOT}/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." and "/" in tail else tail
    return path


_MYPYC_PREFIXES = ("CPyDef_", "CPyPy_")
_MYPYC_GENERATOR = "_____mypyc_generator_helper__"


def compiled_name(func: str) -> str:
    """``[compiled] module:Class.method`` of a mypyc C symbol. CPyDef_engine___Engine___process
    (its C entry) and CPyPy_engine___Engine___process (its Python-callable wrapper) are one
    function: engine:Engine.process."""
    name = func.split("_", 1)[1].removesuffix(_MYPYC_GENERATOR)
    module, _, rest = name.partition("___")
    return f"[compiled] {module}:{rest.replace('___', '.')}"


def _frame_name(frame: str) -> str | None:
    """``file:function``; None for a CPython header helper inlined into its caller."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    func, file = match["func"], match["file"]
    if file.endswith(".h"):
        return None  # Py_DECREF (object.h:537): inlined code of the calling function
    if func.startswith(_MYPYC_PREFIXES):
        return compiled_name(func)
    # C code (``--native``): the library or source file's name is enough
    where = short_location(file) if file.endswith(".py") else file.rsplit("/", 1)[-1]
    return f"{where}:(unnamed)" if func.startswith("0x") else f"{where}:{func}"


@dataclass(frozen=True)
class ThreadSummary:
    name: str
    samples: int
    busy_samples: int


def parse(lines: Iterable[str]) -> list[tuple[str, list[str], int]]:
    """(thread name, frames root-first as ``file:function``, count) per collapsed-stack line."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        parts = stack.split(";")
        thread = "?"
        match = _THREAD.match(parts[0])
        if match is not None:
            thread, parts = match["name"], parts[1:]
        frames = [name for name in map(_frame_name, parts) if name is not None]
        stacks.append((thread, frames, int(count)))
    return stacks


def _is_idle(frames: list[str]) -> bool:
    # "selectors.py:EpollSelector.select" -> "select"
    return not frames or frames[-1].rsplit(":", 1)[-1].rsplit(".", 1)[-1] in IDLE_LEAVES


def threads(stacks: list[tuple[str, list[str], int]]) -> list[ThreadSummary]:
    total: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    for thread, frames, count in stacks:
        total[thread] += count
        if not _is_idle(frames):
            busy[thread] += count
    return [ThreadSummary(t, n, busy[t]) for t, n in total.most_common()]


def summarize(stacks: list[tuple[str, list[str], int]], *, thread: str = "MainThread",
              top: int = 20) -> list[ProfileLine]:
    """Top ``top`` functions of ``thread`` by self time, with their inclusive time; the idle
    share comes first. Percentages are of all samples of that thread."""
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    samples = idle = 0
    for name, frames, count in stacks:
        if name != thread:
            continue
        samples += count
        if _is_idle(frames):
            idle += count
            continue
        self_time[frames[-1]] += count
        for frame in set(frames):
            total_time[frame] += count
    if samples == 0:
        return []

    def pct(n: int) -> float:
        return round(100.0 * n / samples, 1)

    lines = [ProfileLine(function=IDLE, self_pct=pct(idle), total_pct=pct(idle))]
    lines += [ProfileLine(function=f, self_pct=pct(n), total_pct=pct(total_time[f]))
              for f, n in self_time.most_common(top)]
    return lines


def top_inclusive(stacks: list[tuple[str, list[str], int]], *, thread: str = "MainThread",
                  top: int = 25, prefix: str = "") -> list[tuple[str, float]]:
    """Functions of ``thread`` by inclusive time (percent of its samples), optionally only
    those whose location starts with ``prefix`` (e.g. ``streams/``)."""
    total_time: Counter[str] = Counter()
    samples = 0
    for name, frames, count in stacks:
        if name != thread:
            continue
        samples += count
        for frame in set(frames):
            if frame.startswith(prefix):
                total_time[frame] += count
    if samples == 0:
        return []
    return [(f, round(100.0 * n / samples, 1)) for f, n in total_time.most_common(top)]
