"""The broker JIT warm-up's pure parts: the compiler threads' CPU, the quiet rule, the figures."""

from __future__ import annotations

import os
from pathlib import Path

from bench.broker_warmup import QUIET_SHARE, quiet
from bench.report import cpu_use
from bench.run import WARM_BROKER_S, parse_args, warm_up_broker
from bench.stack import compiler_seconds

TICK = os.sysconf("SC_CLK_TCK")


def _task(proc: Path, pid: int, tid: int, name: str, utime: int, stime: int) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    # proc(5): pid (comm) state ppid ... utime is field 14, stime 15
    rest = ["S", "1", *["0"] * 9, str(utime), str(stime), *["0"] * 30]
    (task / "stat").write_text(f"{tid} ({name}) {' '.join(rest)}\n")


def test_compiler_seconds_add_the_jit_threads_of_a_jvm_only(tmp_path: Path) -> None:
    _task(tmp_path, 10, 10, "java", 500, 50)
    _task(tmp_path, 10, 11, "C2 CompilerThre", 3 * TICK, TICK)
    _task(tmp_path, 10, 12, "C1 CompilerThre", TICK, 0)
    _task(tmp_path, 10, 13, "data-plane-kafk", 9 * TICK, 9 * TICK)
    _task(tmp_path, 10, 14, "a (C2 CompilerThre) b", 7 * TICK, 0)  # not a compiler thread
    assert compiler_seconds(10, tmp_path) == 5.0
    _task(tmp_path, 20, 20, "python", 100, 100)
    assert compiler_seconds(20, tmp_path) is None  # not a JVM
    assert compiler_seconds(30, tmp_path) is None  # gone
    assert compiler_seconds(os.getpid()) is None  # this Python process: no JIT threads


def test_quiet_needs_the_last_windows_below_the_share() -> None:
    assert not quiet([])
    assert not quiet([0.0])  # one window is not enough
    assert quiet([0.6, 0.24, 0.0, QUIET_SHARE / 2])
    assert not quiet([0.0, 0.0, QUIET_SHARE])  # at the limit is not below it
    assert not quiet([0.0, QUIET_SHARE * 3, 0.0])
    assert quiet([0.2, 0.001, 0.001, 0.001], count=3)
    assert not quiet([0.06, 0.06], share=0.05)
    assert quiet([0.06, 0.06], share=0.07)


def test_the_budget_keeps_the_jit_part_of_a_jvm_cost() -> None:
    use = cpu_use("kafka", 7, 1, before_s=10.0, published_s=15.0, settled_s=16.0,
                  publish_wall_s=30.0, events=300_000, compiler_s=2.7)
    assert (use.us_per_event, use.compiler_us_per_event) == (20.0, 9.0)
    assert cpu_use("sink", 8, 1, before_s=0.0, published_s=1.0, settled_s=1.0,
                   publish_wall_s=30.0, events=300_000).compiler_us_per_event is None


def test_the_warmup_is_on_by_default_and_zero_skips_it() -> None:
    assert parse_args([]).broker_warmup_max_s == 120.0
    assert parse_args(["--broker-warmup-max-s", "0"]).broker_warmup_max_s == 0.0


def test_only_a_young_local_broker_is_warmed() -> None:
    assert warm_up_broker(4242, 30.0, 120.0)
    assert warm_up_broker(4242, None, 120.0)  # age unknown: warm it
    assert not warm_up_broker(4242, WARM_BROKER_S + 1.0, 120.0)  # it ran traffic before
    assert not warm_up_broker(None, 30.0, 120.0)  # not started by deploy/local: no pid
    assert not warm_up_broker(4242, 30.0, 0.0)  # --broker-warmup-max-s 0
