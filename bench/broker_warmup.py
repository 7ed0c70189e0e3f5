"""Warm the local Kafka broker's JIT compiler before the latency phases (``make bench``).

A broker minutes old spends much of its CPU compiling its own hot paths: HotSpot's C1 and C2
compiler threads. On 2026-12-08, in a half-load phase at 16,000 events/s seconds after
``make services``, they used 46 % of the broker's CPU (Kafka 32 us an event against 8-11 on a
broker warmed by earlier runs), on the core the latency phases share with the sink and
ClickHouse: the phase then measured the broker's start, not the pipeline (a production broker
runs for weeks). Generic traffic (a paced producer, an aiokafka consumer) quietened the compiler
threads in 30-50 s, but the phase after it still found paths to compile (7.5 of Kafka's 21.7 us
an event): the worker's and the sink's clients ask for more than that.

:func:`warm_broker` therefore runs the pipeline itself before the first latency phase: a stack
of its own (topics, database, fresh worker(s) and sink, pinned as the phase pins them), fed
the phase's kind of events by the phase's paced publisher at the phase's rate, in windows of
``window_s``, until the broker's compiler threads used less than ``quiet_share`` of a core in
each of the last ``quiet_windows`` windows, or for at most ``max_s``. Then the stack is stopped
and removed. What it found is kept in the result (``broker_warmup``); each latency phase also
reports the JIT part of Kafka's cost (``compiler_us_per_event``).

Failure behaviour: without a pid for the broker (a broker not started by deploy/local) there is
nothing to watch and the caller skips the warm-up; a process of the stack that dies, or a
publish that fails, ends the warm-up with an error (the caller records it and runs the phases).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone

from bench.e2e import latency_traffic, publish_paced
from bench.report import BrokerWarmup
from bench.stack import BenchStack, compiler_seconds
from cxsignals.simulator.journeys import generate

WINDOW_S = 5.0
QUIET_SHARE = 0.02
"""Compiler threads below 2 % of a core count as quiet: a warmed broker still compiles now and
then (1-5 % of a core in some windows of the runs of 2026-12-08, 20-23 % at first)."""
QUIET_WINDOWS = 2
MAX_S = 120.0


def quiet(shares: Sequence[float], *, share: float = QUIET_SHARE,
          count: int = QUIET_WINDOWS) -> bool:
    """True when the compiler threads' share of a core stayed below ``share`` in each of the
    last ``count`` windows (``shares``: CPU s / wall s of each window, oldest first)."""
    last = shares[-count:]
    return len(last) == count and all(used < share for used in last)


def warm_broker(stack: BenchStack, *, pid: int, worker_cpus: list[int | None],
                sink_cpu: int | None, rate_per_s: float, customers: int, seed: int,
                max_s: float = MAX_S, window_s: float = WINDOW_S) -> BrokerWarmup:
    """Run ``stack``'s pipeline at ``rate_per_s`` until the broker's (``pid``) compiler threads
    are quiet or ``max_s`` passed; see the module docstring. ``stack`` is created here and
    cleaned up before returning."""
    settings = stack.settings()
    started = time.monotonic()
    published = 0
    shares: list[float] = []  # the compiler threads' CPU s / wall s of each window
    first = last = 0.0
    try:
        stack.create()
        workers, sink = stack.start(worker_cpus, sink_cpu)
        started = time.monotonic()
        at_start = compiler_seconds(pid)
        if at_start is None:
            raise RuntimeError(f"the broker (pid {pid}) is gone, or it is not a JVM")
        first = last = at_start
        window_start = started
        while time.monotonic() - started < max_s:
            config = latency_traffic(rate_per_s, window_s, customers, seed + len(shares),
                                     start=datetime.now(timezone.utc).replace(microsecond=0))
            messages = list(generate(config))
            failed, _rate = publish_paced(
                messages, bootstrap_servers=settings.kafka_bootstrap_servers,
                topic=settings.topic_touchpoints, rate_per_s=rate_per_s,
                security=settings.kafka_security)
            if failed:
                raise RuntimeError(f"warm-up publish: {failed} messages not delivered")
            published += len(messages)
            for proc in (*workers, sink):
                proc.check_alive()
            now = compiler_seconds(pid)
            if now is None:
                raise RuntimeError(f"the broker (pid {pid}) is gone")
            now_s = time.monotonic()
            shares.append((now - last) / max(now_s - window_start, 1e-3))
            last, window_start = now, now_s
            if quiet(shares):
                break
    finally:
        problems = stack.cleanup()
    return BrokerWarmup(
        seconds=round(time.monotonic() - started, 1), rate_per_s=round(rate_per_s, 1),
        published=published, compiler_cpu_s=round(last - first, 2),
        compiler_share_by_window=[round(w, 3) for w in shares], quiet=quiet(shares),
        cleanup_problems=problems,
    )
