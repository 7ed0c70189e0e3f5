"""bench.stack's quiet-machine gate before a latency phase (on this machine's /proc/stat) and
the services' age it reports."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.stack import cpu_busy, on_cpu, process_age_s, service_age_s, wait_quiet


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


def test_a_process_age_comes_from_proc_and_a_missing_service_has_none(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.2)
        (tmp_path / "kafka.pid").write_text(f"{child.pid}\n")
        age_s = service_age_s("kafka", tmp_path)
        assert age_s is not None and 1.0 <= age_s < 10.0
        mine = process_age_s(os.getpid())
        assert mine is not None and mine > age_s  # this test process started earlier
    finally:
        child.kill()
        child.wait()
    assert service_age_s("clickhouse", tmp_path) is None  # no pid file
    (tmp_path / "prometheus.pid").write_text("not a pid")
    assert service_age_s("prometheus", tmp_path) is None


def test_on_cpu_moves_the_calling_thread_and_restores_it() -> None:
    before = os.sched_getaffinity(0)
    target = max(before)
    with on_cpu(target):
        assert os.sched_getaffinity(0) == {target}
    assert os.sched_getaffinity(0) == before
    with on_cpu(None):
        assert os.sched_getaffinity(0) == before
