"""bench.stack's quiet-machine gate before a latency phase, on this machine's /proc/stat."""

from __future__ import annotations

import os
import threading
import time

from bench.stack import cpu_busy, wait_quiet


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        pass


def test_a_spinning_core_reads_busy() -> None:
    os.sched_setaffinity(0, {0})  # this thread and the spinner share cpu 0
    stop = threading.Event()
    spinner = threading.Thread(target=_spin, args=(stop,), daemon=True)
    try:
        spinner.start()
        assert cpu_busy([0], window_s=0.5) > 0.5
    finally:
        stop.set()
        spinner.join()
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


def test_the_gate_gives_up_after_its_timeout_and_passes_a_quiet_enough_machine() -> None:
    started = time.monotonic()
    waited_s, busy = wait_quiet([0], busy_max=0.0, timeout_s=1.5)  # never quiet enough
    assert 1.5 <= waited_s <= 3.5 and time.monotonic() - started < 4
    assert 0.0 <= busy <= 1.0
    waited_s, _busy = wait_quiet([0], busy_max=1.01, timeout_s=30)  # always quiet enough
    assert waited_s < 1.5
