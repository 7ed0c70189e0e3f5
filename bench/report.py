"""The benchmark's result document and the pure arithmetic behind its figures.

Nothing here touches Kafka, ClickHouse or the clock: percentiles, the sustained-rate window,
the result schema (pydantic, so a run that produced a malformed document fails before it is
written) and the text table. ``bench.run`` fills a :class:`BenchResult`; the JSON it writes is
``BenchResult.model_dump_json()``, readable back with ``BenchResult.model_validate_json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "cxsignals-bench/1"

# Goals of issue 12 (end to end, latency, engine) and of issue 7 (sink alone, decode); the table
# marks each figure against them.
TARGET_E2E_EVENTS_PER_S = 15_000.0
TARGET_RATIO_TO_CEILING = 0.2
TARGET_ALERT_P99_MS = 250.0
TARGET_ROW_P99_MS = 1_000.0
TARGET_ENGINE_EVENTS_PER_S = 40_000.0
TARGET_SINK_ROWS_PER_S = 200_000.0
TARGET_DECODE_US = 5.0


# ---------------------------------------------------------------------------- arithmetic


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks (the
    default of numpy.percentile). Raises ValueError on an empty sequence or q outside 0-100."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0-100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class LatencyStats(BaseModel):
    """Distribution of one latency, in milliseconds."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(ge=0)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


def latency_stats(values_ms: Sequence[float]) -> LatencyStats:
    """p50, p99 and max of ``values_ms``; all None (count 0) when there is no sample."""
    if not values_ms:
        return LatencyStats(count=0)
    return LatencyStats(
        count=len(values_ms),
        p50_ms=round(percentile(values_ms, 50), 1),
        p99_ms=round(percentile(values_ms, 99), 1),
        max_ms=round(max(values_ms), 1),
    )


class SecondStats(BaseModel):
    """publish->alert of the alerts whose trigger was published in one second of a phase."""

    model_config = ConfigDict(frozen=True)

    second: int = Field(ge=0, description="from the first measured trigger's publish")
    count: int = Field(ge=0)
    p50_ms: float
    max_ms: float
    over_goal: int = Field(ge=0, description="alerts slower than the goal")


def latency_by_second(samples: Sequence[tuple[float, float]], goal_ms: float
                      ) -> list[SecondStats]:
    """``(trigger publish ms, latency ms)`` samples grouped by the second of their trigger
    (from the earliest), in order: shows whether a p99 comes from one episode or from the
    whole phase."""
    if not samples:
        return []
    first_ms = min(t for t, _ in samples)
    by_second: dict[int, list[float]] = {}
    for trigger_ms, latency_ms in samples:
        by_second.setdefault(int((trigger_ms - first_ms) // 1000), []).append(latency_ms)
    return [SecondStats(second=second, count=len(values),
                        p50_ms=round(percentile(values, 50), 1), max_ms=round(max(values), 1),
                        over_goal=sum(v > goal_ms for v in values))
            for second, values in sorted(by_second.items())]


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q``-quantile (0-1) of a Prometheus histogram given as cumulative counts per upper
    bound (``+Inf`` included), interpolated linearly within the bucket like PromQL's
    ``histogram_quantile``; the highest finite bound when it falls in the ``+Inf`` bucket; None
    without observations."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_stats(before: dict[float, float], after: dict[float, float]) -> LatencyStats:
    """p50 and p99 (ms) of what a histogram in seconds observed between two scrapes."""
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    count = int(delta.get(math.inf, 0.0))
    if count <= 0:
        return LatencyStats(count=0)
    p50, p99 = histogram_quantile(delta, 0.5), histogram_quantile(delta, 0.99)
    return LatencyStats(count=count,
                        p50_ms=None if p50 is None else round(p50 * 1000, 1),
                        p99_ms=None if p99 is None else round(p99 * 1000, 1))


@dataclass(frozen=True)
class RateWindow:
    """Throughput between two samples of a monotone counter."""

    start_s: float
    end_s: float
    start_count: float
    end_count: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    @property
    def per_s(self) -> float:
        return (self.end_count - self.start_count) / self.seconds


def sustained_rate(
    samples: Sequence[tuple[float, float]],
    total: float,
    *,
    warmup_fraction: float = 0.1,
    end_fraction: float = 0.95,
) -> RateWindow | None:
    """The steady-state rate of a counter sampled as ``(time_s, count)`` while it runs to
    ``total``: from the first sample at or past ``warmup_fraction * total`` (start-up,
    table recovery and the first fetches are excluded) to the last sample at or below
    ``end_fraction * total`` (the drain at the end, where partitions finish unevenly, is
    excluded). None when fewer than two samples fall in that window or no time passed."""
    if not 0.0 <= warmup_fraction < end_fraction <= 1.0:
        raise ValueError("need 0 <= warmup_fraction < end_fraction <= 1")
    ordered = sorted(samples)
    start = next(((t, c) for t, c in ordered if c >= warmup_fraction * total), None)
    end = next(((t, c) for t, c in reversed(ordered) if c <= end_fraction * total), None)
    if start is None or end is None or end[0] <= start[0]:
        return None
    return RateWindow(start_s=start[0], end_s=end[0], start_count=start[1], end_count=end[1])


def step_changes(samples: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples of a counter that moves in steps (a consumer group's committed offsets,
    one step per checkpoint) at which it changed: the first sample of each new value. A rate
    between two of them measures the steps; between any two samples it would measure where
    the sampling fell (0 between two samples of one step, a spike across one)."""
    changes: list[tuple[float, float]] = []
    for t, count in sorted(samples):
        if not changes or count != changes[-1][1]:
            changes.append((t, count))
    return changes


# ---------------------------------------------------------------------------- result schema


class Git(BaseModel):
    commit: str
    short: str
    dirty: bool


class Machine(BaseModel):
    nproc: int = Field(ge=1)
    memory_bytes: int = Field(ge=0)
    cpu_model: str
    python: str
    platform: str
    kafka_bootstrap: str
    clickhouse_version: str | None = None
    loadavg_start: float | None = Field(None, description="1-min load average: a shared host")
    loadavg_end: float | None = None
    kafka_uptime_s: float | None = Field(
        None, description="seconds since the local broker (deploy/local pid file) started; a "
                          "broker minutes old is still warming up: its first runs are slower")


class Params(BaseModel):
    events: int = Field(ge=1)
    customers: int = Field(ge=1)
    bad_share: float = Field(ge=0, le=1)
    seed: int
    touchpoint_partitions: int = Field(ge=1)
    worker_cpu: int | None = Field(None, description="core the worker is pinned to (taskset)")
    harness_cpu: int | None = None
    workers: int = Field(1, ge=1, description="worker processes (one consumer group)")
    worker_cpus: list[int | None] = Field(
        default_factory=list, description="core of each worker process (None: not pinned)")
    sink_cpu: int | None = Field(
        None, description="core of the sink process: the harness's, off the worker's core")
    services_moved: list[str] = Field(
        default_factory=list,
        description="local services (deploy/local pid files) kept off the worker's core for the "
                    "run, so that the worker has its core to itself",
    )
    latency_s: float = Field(gt=0)
    latency_warmup_s: float = Field(ge=0)
    broker_warmup_max_s: float = Field(
        0.0, ge=0, description="time limit of the broker's JIT warm-up (0: none)")
    latency_rate_per_s: float | None = Field(
        None, description="forced rate of the half-load run; None = half of e2e")
    latency_loads: list[float] = Field(
        default_factory=lambda: [0.5], description="latency runs, as fractions of the e2e rate")
    poll_ms: int = Field(ge=1)
    sink_rows: int = Field(ge=0)
    decode_n: int = Field(ge=0)
    engine_events: int = Field(ge=0)
    engine_customers: int = Field(ge=1)
    sink_batch_rows: int
    sink_batch_ms: int
    profile_s: float = Field(0.0, ge=0, description="profiling time on the e2e worker")
    profiler: str = Field("py-spy", description="what profiled it: py-spy or perf")
    phases: list[str]


class Ceiling(BaseModel):
    """aiokafka getmany + validate_event over the pre-filled topic, nothing else."""

    events: int
    invalid: int
    seconds: float
    events_per_s: float
    cpu_s: float | None = None
    events_per_cpu_s: float | None = Field(None, description="events / CPU seconds used")
    raw_events_per_s: float | None = Field(
        None, description="the same getmany loop without validation: the guide's raw aiokafka "
                          "reference (~250,000 ev/s when it was measured), i.e. the box's speed")


class ProcessFigures(BaseModel):
    """One process of a phase: a worker (``cxsignals worker``) or the sink (``cxsignals sink``).

    A worker's events are the ones its counters handled; the sink's are the touchpoint rows it
    wrote (``cx_clickhouse_rows_written_total{table="touchpoint_events"}``), with the CPU it
    also spent on the scores, alerts and dead letters of the same span. CPU time is user +
    system of all its threads (/proc/<pid>/stat)."""

    role: str
    pid: int
    cpu: int | None = Field(None, description="core it was pinned to")
    startup_s: float | None = Field(None, description="process start to Ready")
    events: int | None = Field(None, description="in the measured span")
    seconds: float | None = Field(None, description="the measured span")
    events_per_s: float | None = None
    cpu_s: float | None = Field(None, description="CPU seconds used in the measured span")
    cpu_utilization: float | None = Field(None, description="CPU s / wall s")
    events_per_cpu_s: float | None = None
    loop_lag_max_s: float | None = Field(
        None, description="cx_event_loop_lag_max_seconds at the end: longest stall since start")
    peak_rss_bytes: int | None = None
    cpu_utilization_publishing: float | None = Field(
        None, description="latency phases: CPU s / wall s while the load was published (the "
        "span also waits for the last ClickHouse rows, when a worker that kept up idles)")


class EndToEnd(BaseModel):
    """Worker(s) and sink on a pre-filled topic: scoring, RocksDB + changelog, alerts, ClickHouse.
    Worker figures (rates, CPU) are over all worker processes together."""

    events: int
    customers: int
    valid_events: int
    startup_s: float = Field(description="worker start to Ready")
    seconds_to_all_handled: float | None = Field(description="Ready to every event counted")
    events_per_s_metrics: float | None = Field(description="sustained, from the worker's counters")
    events_per_s_lag: float | None = Field(description="sustained, from committed group offsets")
    window_s: float | None = None
    ratio_to_ceiling: float | None = None
    cpu_utilization: float | None = Field(None, description="worker CPU s / wall s, in window")
    events_per_cpu_s: float | None = Field(
        None, description="per worker CPU second, in window; robust to contention")
    ratio_to_ceiling_cpu: float | None = Field(None, description="events per CPU s vs ceiling's")
    handled: int = Field(description="processed + dead letters + duplicates, per the counters")
    dead_letters: int
    alerts: int
    score_updates: int
    clickhouse_rows: int = Field(description="touchpoint_events rows at the end (count())")
    clickhouse_seconds_to_all_rows: float | None = Field(
        description="the sink's Ready to the last row")
    clickhouse_rows_per_s: float | None = Field(
        description="valid rows / the sink's Ready to the last row")
    timed_out: bool = False
    workers: int = Field(1, ge=1, description="worker processes")
    sink_events_per_cpu_s: float | None = Field(
        None, description="touchpoint rows per sink CPU second, Ready to the last row")
    worker_loop_lag_max_s: float | None = Field(None, description="the largest of the workers'")
    sink_loop_lag_max_s: float | None = None
    processes: list[ProcessFigures] = Field(
        default_factory=list, description="each worker, then the sink")


class CpuUse(BaseModel):
    """One process's CPU in a latency phase: a worker, the sink, a local service (Kafka,
    ClickHouse, Prometheus) or the harness (the bench's own process: the publisher, the
    ClickHouse poller, the scrapes). User + system time of all its threads (/proc/<pid>/stat)."""

    name: str
    pid: int
    cpu: int | None = Field(None, description="core it ran on (None: not pinned to one)")
    cpu_utilization_publishing: float | None = Field(
        None, description="CPU s / wall s while the load was published")
    us_per_event: float | None = Field(
        None, description="CPU us from publish start to settled (every event handled and "
                          "written), per event published: what an event costs this process "
                          "(a phase that did not settle within its timeout, rows_not_seen > 0, "
                          "gives a lower bound)")
    compiler_us_per_event: float | None = Field(
        None, description="of us_per_event, a JVM's (Kafka's) JIT compiler threads: a young "
                          "broker compiling its hot paths, not what an event costs it")


def cpu_use(name: str, pid: int, cpu: int | None, *, before_s: float | None,
            published_s: float | None, settled_s: float | None, publish_wall_s: float,
            events: int, compiler_s: float | None = None) -> CpuUse:
    """A :class:`CpuUse` from a process's CPU seconds at publish start, at publish end and
    when the phase settled (None: the process was gone); ``compiler_s``: the CPU seconds its
    JIT compiler threads used from publish start to settled (a JVM's; None for the others)."""
    busy = None if before_s is None or published_s is None else published_s - before_s
    used = None if before_s is None or settled_s is None else settled_s - before_s
    return CpuUse(
        name=name, pid=pid, cpu=cpu,
        cpu_utilization_publishing=(round(busy / publish_wall_s, 3)
                                    if busy is not None and publish_wall_s > 0 else None),
        us_per_event=round(used / events * 1e6, 2) if used is not None and events > 0 else None,
        compiler_us_per_event=(round(compiler_s / events * 1e6, 2)
                               if compiler_s is not None and events > 0 else None),
    )


def _us_by_core(budget: Sequence[CpuUse]) -> dict[int | None, float]:
    """CPU us an event of the processes of each core (None: not pinned); a process without a
    cost figure counts as nothing."""
    by_core: dict[int | None, float] = {}
    for use in budget:
        if use.us_per_event is not None:
            by_core[use.cpu] = by_core.get(use.cpu, 0.0) + use.us_per_event
    return by_core


def core_demand(budget: Sequence[CpuUse], rate_per_s: float) -> dict[str, float]:
    """Cores the processes of each core need at ``rate_per_s`` (see ``Latency.core_demand``)."""
    demand = {"any" if cpu is None else f"cpu {cpu}": round(rate_per_s * us / 1e6, 2)
              for cpu, us in _us_by_core(budget).items()}
    return dict(sorted(demand.items()))


def box_capacity_per_s(budget: Sequence[CpuUse], cores: int) -> float | None:
    """The highest rate the box sustains at the budget's costs: the rate at which the first
    core is 100 % busy (each pinned core with its processes; those not pinned spread over all
    ``cores``, so the box as a whole is a bound too). None without a cost figure."""
    by_core = _us_by_core(budget)
    total_us = sum(by_core.values())
    if total_us <= 0:
        return None
    bounds = [1e6 / us for cpu, us in by_core.items() if cpu is not None and us > 0]
    bounds.append(max(1, cores) * 1e6 / total_us)
    return round(min(bounds), 1)


class Latency(BaseModel):
    """Fresh worker(s) and sink fed at a fixed rate by the simulator's rate-limited publisher."""

    rate_per_s: float
    published: int
    measured_after_s: float = Field(description="events published in the first seconds skipped")
    event_to_alert: LatencyStats
    event_to_row: LatencyStats
    event_to_row_sink: LatencyStats | None = Field(
        None, description="publish -> row acknowledged by ClickHouse, from the sink's "
                          "cx_sink_event_to_row_seconds histogram (rows written after the "
                          "warm-up; bucket-interpolated). No query load on ClickHouse, unlike "
                          "the poller behind event_to_row")
    event_to_alert_by_rule: dict[str, LatencyStats] = Field(
        default_factory=dict, description="publish->alert of each rule that fired")
    event_to_alert_by_second: list[SecondStats] = Field(
        default_factory=list, description="publish->alert per second of trigger publish")
    alerts_seen: int
    alerts_without_trigger: int = Field(description="deadline alerts (no publish to measure)")
    row_samples: int
    rows_not_seen: int
    poll_ms: int
    load_fraction: float | None = Field(None, description="rate_per_s / the e2e rate")
    published_per_s: float | None = Field(
        None, description="rate the publisher achieved (below rate_per_s when it fell behind)")
    worker_loop_lag_max_s: float | None = Field(None, description="the largest of the workers'")
    sink_loop_lag_max_s: float | None = None
    processes: list[ProcessFigures] = Field(
        default_factory=list, description="each worker, then the sink: publish start to settled")
    cpu_budget: list[CpuUse] = Field(
        default_factory=list, description="every process of the box that the phase keeps busy")
    core_demand: dict[str, float] = Field(
        default_factory=dict,
        description="cores the phase's rate needs, by core ('cpu N', or 'any' for processes "
                    "not pinned): rate_per_s x the us_per_event of the processes on it; "
                    "above 1 for a core, that core cannot keep up at this rate")
    capacity_per_s: float | None = Field(
        None, description="the highest rate the box sustains at this phase's costs "
                          "(box_capacity_per_s): the first core 100 % busy")


class Resources(BaseModel):
    """Of the end-to-end worker(s): the largest peak RSS, their state dirs together."""

    peak_rss_bytes: int | None = None
    sink_peak_rss_bytes: int | None = None
    state_dir_bytes: int | None = None
    customers_in_state: int | None = None
    state_dir_bytes_per_customer: float | None = None
    mean_state_value_bytes: float | None = Field(None, description="CustomerState.to_bytes()")


class BrokerWarmup(BaseModel):
    """The pipeline run before the latency phases until the local broker's JIT compiler
    threads went quiet (bench/broker_warmup.py)."""

    seconds: float = Field(description="from the stack's Ready to quiet (or the time limit)")
    rate_per_s: float
    published: int
    compiler_cpu_s: float = Field(description="CPU s of the broker's JIT compiler threads "
                                              "during the warm-up")
    compiler_share_by_window: list[float] = Field(
        default_factory=list, description="their share of a core (CPU s / wall s) in each "
                                          "window of about 5 s")
    quiet: bool = Field(description="the compiler threads went quiet before the time limit")
    cleanup_problems: list[str] = Field(default_factory=list)


class ProfileLine(BaseModel):
    function: str
    self_pct: float
    total_pct: float


class BenchResult(BaseModel):
    schema_: str = Field(SCHEMA, alias="schema")
    started_at: datetime
    finished_at: datetime
    git: Git
    machine: Machine
    params: Params
    ceiling: Ceiling | None = None
    end_to_end: EndToEnd | None = None
    broker_warmup: BrokerWarmup | None = Field(
        None, description="before the latency phases (None: skipped, e.g. no local broker)")
    latency: Latency | None = Field(None, description="at half the e2e rate")
    latency_80: Latency | None = Field(None, description="at 80 % of the e2e rate")
    sink: dict[str, Any] | None = None
    decode: dict[str, float] | None = None
    engine: dict[str, float] | None = None
    resources: Resources | None = None
    profile: list[ProfileLine] | None = None
    profile_file: str | None = None
    errors: dict[str, str] = Field(default_factory=dict, description="phase -> why it failed")

    model_config = ConfigDict(populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def result_path(folder: Path, started_at: datetime, short_sha: str) -> Path:
    """``<folder>/<UTC timestamp>-<short sha>.json``, e.g. ``20261123T150700Z-abc1234.json``.
    Raises ValueError for a naive ``started_at``."""
    offset = started_at.utcoffset()
    if offset is None:
        raise ValueError("started_at must be timezone-aware")
    stamp = (started_at - offset).strftime("%Y%m%dT%H%M%SZ")
    return folder / f"{stamp}-{short_sha}.json"


# ---------------------------------------------------------------------------- table


def _num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def _ms(seconds: float | None) -> str:
    return _num(None if seconds is None else seconds * 1000, 1, "ms")


def _vs(value: float | None, target: float, *, lower_is_better: bool = False) -> str:
    if value is None:
        return ""
    met = value <= target if lower_is_better else value >= target
    sign = "<=" if lower_is_better else ">="
    return f"{'ok ' if met else 'MISS'} (goal {sign} {target:,.4g})"


def table_rows(result: BenchResult) -> list[tuple[str, str, str]]:
    """(figure, value, versus goal) for every figure the run produced; a failed phase shows
    as one FAILED row (its error is in ``errors``)."""
    rows: list[tuple[str, str, str]] = []
    if result.ceiling is not None:
        c = result.ceiling
        rows.append(("1 ceiling: getmany + validate", _num(c.events_per_s, 0, "ev/s"),
                     f"{_num(c.events_per_cpu_s, 0)} per CPU s"))
        if c.raw_events_per_s is not None:
            rows.append(("1 raw getmany (the box's reference)",
                         _num(c.raw_events_per_s, 0, "ev/s"), "guide: ~250,000 on a quick day"))
    if result.end_to_end is not None:
        e = result.end_to_end
        many = f" ({e.workers} workers)" if e.workers > 1 else ""
        rows.append((f"2 e2e sustained (counters){many}", _num(e.events_per_s_metrics, 0, "ev/s"),
                     _vs(e.events_per_s_metrics, TARGET_E2E_EVENTS_PER_S)))
        rows.append(("2 e2e sustained (group lag)", _num(e.events_per_s_lag, 0, "ev/s"),
                     "" if e.events_per_s_lag is not None else
                     "fewer than two group commits in the drain (commits follow checkpoints)"))
        rows.append(("2 e2e / ceiling", _num(e.ratio_to_ceiling, 3),
                     _vs(e.ratio_to_ceiling, TARGET_RATIO_TO_CEILING)))
        rows.append(("2 e2e per worker CPU second", _num(e.events_per_cpu_s, 0, "ev/s"),
                     f"CPU use {_num(e.cpu_utilization, 2)}"))
        rows.append(("2 e2e / ceiling, per CPU second", _num(e.ratio_to_ceiling_cpu, 3), ""))
        rows.append(("2 e2e all handled after Ready", _num(e.seconds_to_all_handled, 1, "s"), ""))
        rows.append(("2 ClickHouse all rows after sink Ready",
                     _num(e.clickhouse_seconds_to_all_rows, 1, "s"), ""))
        rows.append(("2 sink rows (average)", _num(e.clickhouse_rows_per_s, 0, "rows/s"), ""))
        sink_use = next((p.cpu_utilization for p in e.processes if p.role == "sink"), None)
        rows.append(("2 sink per CPU second", _num(e.sink_events_per_cpu_s, 0, "ev/s"),
                     f"CPU use {_num(sink_use, 2)}"))
        rows.append(("2 worker event-loop lag max", _ms(e.worker_loop_lag_max_s), ""))
        rows.append(("2 sink event-loop lag max", _ms(e.sink_loop_lag_max_s), ""))
        if e.workers > 1:
            for i, w in enumerate(p for p in e.processes if p.role == "worker"):
                rows.append((f"2 worker {i} (cpu {w.cpu})", _num(w.events_per_s, 0, "ev/s"),
                             f"{_num(w.events_per_cpu_s, 0)} per CPU s, "
                             f"CPU use {_num(w.cpu_utilization, 2)}"))
    warm = result.broker_warmup
    if warm is not None:
        rows.append(("3 broker JIT warm-up", _num(warm.seconds, 0, "s"),
                     f"at {_num(warm.rate_per_s, 0, 'ev/s')}, compiler threads "
                     f"{_num(warm.compiler_cpu_s, 1, 'CPU s')}; "
                     + ("quiet" if warm.quiet else "NOT quiet by the time limit")))
    for lat, tag in ((result.latency, ""), (result.latency_80, " (80%)")):
        if lat is None:
            continue
        a, r = lat.event_to_alert, lat.event_to_row
        published = f"published {_num(lat.published_per_s, 0, 'ev/s')}"
        rows.append((f"3 latency load{tag}", _num(lat.rate_per_s, 0, "ev/s"), published))
        workers = [p for p in lat.processes if p.role == "worker"]
        for i, w in enumerate(workers):
            # what the worker could score on its core, against its share of the load
            share = lat.rate_per_s / len(workers)
            short = w.events_per_cpu_s is not None and w.events_per_cpu_s < share
            rows.append((f"3 worker{f' {i}' if len(workers) > 1 else ''} per CPU second{tag}",
                         _num(w.events_per_cpu_s, 0, "ev/s"),
                         f"CPU use {_num(w.cpu_utilization, 2)}"
                         + (f" ({_num(w.cpu_utilization_publishing, 2)} while publishing)"
                            if w.cpu_utilization_publishing is not None else "")
                         + ("; below its load: it fell behind" if short else "")))
        rows.append((f"3 publish->alert p50{tag}", _num(a.p50_ms, 1, "ms"), f"n={a.count}"))
        rows.append((f"3 publish->alert p99{tag}", _num(a.p99_ms, 1, "ms"),
                     _vs(a.p99_ms, TARGET_ALERT_P99_MS, lower_is_better=True)))
        rows.append((f"3 publish->alert max{tag}", _num(a.max_ms, 1, "ms"), ""))
        rs = lat.event_to_row_sink
        if rs is not None:
            rows.append((f"3 publish->ClickHouse row p50 (sink){tag}", _num(rs.p50_ms, 1, "ms"),
                         f"n={rs.count}"))
            rows.append((f"3 publish->ClickHouse row p99 (sink){tag}", _num(rs.p99_ms, 1, "ms"),
                         _vs(rs.p99_ms, TARGET_ROW_P99_MS, lower_is_better=True)))
        poll = f"poll every {lat.poll_ms} ms"
        rows.append((f"3 publish->ClickHouse row p50 (poll){tag}", _num(r.p50_ms, 1, "ms"),
                     f"n={r.count}, {poll}"))
        rows.append((f"3 publish->ClickHouse row p99 (poll){tag}", _num(r.p99_ms, 1, "ms"),
                     _vs(r.p99_ms, TARGET_ROW_P99_MS, lower_is_better=True) if rs is None
                     else "an upper bound"))
        rows.append((f"3 publish->ClickHouse row max (poll){tag}", _num(r.max_ms, 1, "ms"), ""))
        rows.append((f"3 event-loop lag max{tag}", _ms(lat.worker_loop_lag_max_s),
                     f"sink {_ms(lat.sink_loop_lag_max_s)}"))
        if lat.core_demand:
            over = [core for core, cores in lat.core_demand.items() if cores > 1.0]
            rows.append((f"3 cores needed at this load{tag}",
                         ", ".join(f"{core}: {cores:.2f}" for core, cores in
                                   lat.core_demand.items()),
                         "; ".join([
                             *([f"{' and '.join(over)} over 1: cannot keep up"] if over else []),
                             ", ".join(f"{u.name} {_num(u.us_per_event, 1)}"
                                       + (f" (JIT {_num(u.compiler_us_per_event, 1)})"
                                          if u.compiler_us_per_event else "")
                                       for u in lat.cpu_budget) + " us/event"])))
        if lat.capacity_per_s is not None:
            rows.append((f"3 rate the box sustains at these costs{tag}",
                         _num(lat.capacity_per_s, 0, "ev/s"),
                         f"its first core 100 % busy; the load is "
                         f"{lat.rate_per_s / lat.capacity_per_s:.2f} of it"))
    if result.sink is not None:
        rate = result.sink.get("rows_per_s")
        rows.append(("4 sink alone", _num(rate, 0, "rows/s"),
                     _vs(rate, TARGET_SINK_ROWS_PER_S)))
    if result.decode is not None:
        us = result.decode.get("us_per_event")
        rows.append(("5 decode + validate", _num(us, 2, "us/event"),
                     _vs(us, TARGET_DECODE_US, lower_is_better=True)))
    if result.engine is not None:
        rate = result.engine.get("events_per_s")
        rows.append(("  engine alone", _num(rate, 0, "ev/s"),
                     _vs(rate, TARGET_ENGINE_EVENTS_PER_S)))
    if result.resources is not None:
        res = result.resources
        mib = None if res.peak_rss_bytes is None else res.peak_rss_bytes / 2**20
        sink_mib = None if res.sink_peak_rss_bytes is None else res.sink_peak_rss_bytes / 2**20
        rows.append(("6 worker peak RSS", _num(mib, 1, "MiB"),
                     f"sink {_num(sink_mib, 1, 'MiB')}"))
        rows.append(("6 RocksDB dir / customer", _num(res.state_dir_bytes_per_customer, 0, "B"),
                     f"{res.customers_in_state or 0:,} customers"))
        rows.append(("6 state value mean", _num(res.mean_state_value_bytes, 0, "B"), ""))
    for phase in result.errors:
        rows.append((f"! {phase}", "FAILED", "see errors in the JSON"))
    return rows


def format_table(rows: Sequence[tuple[str, str, str]]) -> str:
    """Left-aligned figure names, right-aligned values, one line per row."""
    if not rows:
        return ""
    name_w = max(len(r[0]) for r in rows)
    value_w = max(len(r[1]) for r in rows)
    lines = [f"{'figure'.ljust(name_w)}  {'value'.rjust(value_w)}  goal"]
    lines.append("-" * len(lines[0]))
    for name, value, note in rows:
        lines.append(f"{name.ljust(name_w)}  {value.rjust(value_w)}  {note}".rstrip())
    return "\n".join(lines)
