"""kill -9 of the worker and of the sink at random (seeded, logged) moments while simulated
traffic flows; each is restarted at once. After the drain: every event is in ClickHouse exactly
once (after merge), alert records repeat only with the same alert id and payload, and the final
states and scores equal an offline recomputation of the same events (issue 13, item 5).

The figures of each run are printed and written to ``<tmp>/kill9.txt``; docs/reliability.md
quotes them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from tests.faults.chaos_support import (
    PacedPublisher,
    conclude,
    expected_outcome,
    traffic,
    verify,
    wait_drained,
    worker_env,
)
from tests.integration.conftest import Stack, WorkerProcess


def _kill9_loop(stack: Stack, start_worker: Callable[..., WorkerProcess],
                start_sink: Callable[..., WorkerProcess], *, events: int, customers: int,
                kills_each: int, rate_per_s: float, seed: int, drain_timeout_s: float) -> None:
    started = time.monotonic()
    start, messages = traffic(events, customers, seed)
    env = worker_env(stack)
    worker, sink = start_worker(**env), start_sink()
    publisher = PacedPublisher(stack, messages, rate_per_s)
    publisher.start()
    publish_s = len(messages) / rate_per_s
    rng = random.Random(seed)
    targets = ["worker"] * kills_each + ["sink"] * kills_each
    rng.shuffle(targets)
    # Kill moments spread over the publishing window (seeded), in order.
    moments = sorted(rng.uniform(0.05, 0.9) * publish_s for _ in targets)
    lines = [f"kill -9 loop: {len(messages)} messages ({events} generated, anonymous-only "
             f"dropped), {customers} customers, seed {seed}, start {start:%Y-%m-%dT%H:%M:%SZ}, "
             f"{rate_per_s:.0f}/s"]
    t0 = time.monotonic()
    for at_s, target in zip(moments, targets, strict=True):
        time.sleep(max(0.0, at_s - (time.monotonic() - t0)))
        victim = worker if target == "worker" else sink
        victim.proc.kill()  # SIGKILL
        victim.proc.wait(timeout=10)
        pause_s = rng.uniform(0.2, 2.0)
        lines.append(f"  t={time.monotonic() - t0:6.1f} s kill -9 {target} (pid "
                     f"{victim.proc.pid}), restart after {pause_s:.1f} s")
        time.sleep(pause_s)
        if target == "worker":
            worker = start_worker(**env)
        else:
            sink = start_sink()
    publisher.finish(timeout_s=publish_s + 120)
    lines.append(f"  published in {time.monotonic() - t0:.1f} s")
    drained_s = wait_drained(stack, drain_timeout_s)
    lines.append(f"  drained {drained_s:.1f} s after the last message")
    expected = expected_outcome(stack)
    conclude(stack, "kill9", lines, expected, verify(stack, expected), started)


def test_kill9_worker_and_sink_twice_each_lose_and_corrupt_nothing(
    stack: Stack, start_worker: Callable[..., WorkerProcess],
    start_sink: Callable[..., WorkerProcess],
) -> None:
    """CI variant: 20,000 events, two kill -9 of each process."""
    _kill9_loop(stack, start_worker, start_sink, events=20_000, customers=2_000, kills_each=2,
                rate_per_s=500, seed=13, drain_timeout_s=180)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_kill9_loop_200k_events_five_kills_each(
    stack: Stack, start_worker: Callable[..., WorkerProcess],
    start_sink: Callable[..., WorkerProcess],
) -> None:
    """Issue 13 item 5 as written: 200,000 events, five kill -9 of the worker and of the sink.
    Paced so that the kills (a restarted worker waits up to Faust's 60 s session timeout for
    the killed member to leave the group) fall while events still flow."""
    _kill9_loop(stack, start_worker, start_sink, events=200_000, customers=20_000, kills_each=5,
                rate_per_s=500, seed=5, drain_timeout_s=900)
