"""``make bench``: every figure of issues 7 and 12 in one run, against the real local Kafka and
ClickHouse.

Phases (``--phases`` picks some; all by default):

1. ceiling  - aiokafka getmany + validate_event over the pre-filled topic (one pinned core)
2. e2e      - ``cxsignals worker`` (pinned with taskset to the worker's core; ``--workers N``
              starts N in one group) and ``cxsignals sink`` (a separate process, pinned to the
              harness's core, with the services) on the pre-filled topic: sustained events/s
              from the workers' counters and their group's committed offsets, events per CPU
              second and event-loop lag max of each process, ClickHouse catch-up
3. latency  - fresh workers and sink fed at half and at 80 % of the e2e rate: publish->alert
              and publish->row, each process's event-loop lag max
4. sink     - ``bench.sink_bench.bench_sink`` (ClickHouse writer alone)
5. decode   - ``bench.decode_bench.bench_decode`` (decode + validate, us/event)
6. engine   - ``bench.engine_bench.bench_engine`` (scoring engine alone)
Decode and engine run last, on the worker's core (idle by then) with the services kept off it.
Peak RSS and state size per customer come from the e2e worker(s).

Prints a table and writes ``bench/results/<UTC stamp>-<git short sha>.json``
(:class:`bench.report.BenchResult`). Every topic, consumer group, database and state dir the run
creates carries a unique ``bench-<id>`` prefix and is removed at the end, also after a failure
or Ctrl-C. Extra arguments come from the command line or the ``BENCH_ARGS`` environment variable,
so ``make bench BENCH_ARGS="--events 50000 --customers 5000"`` works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from bench import perf_profile, profile
from bench.report import (
    BenchResult,
    Ceiling,
    Git,
    Machine,
    Params,
    ProfileLine,
    format_table,
    result_path,
    table_rows,
)
from bench.stack import (
    LOCAL_SERVICES,
    QUIET_BUSY_MAX,
    QUIET_TIMEOUT_S,
    BenchStack,
    Proc,
    on_cpu,
    pinned,
    service_age_s,
    service_pid,
    services_off_cpu,
    wait_quiet,
)
from cxsignals.settings import REPO_ROOT, Settings

PHASES = ("ceiling", "e2e", "latency", "sink", "decode", "engine")
# Latency runs: result field -> fraction of the e2e rate.
LATENCY_LOADS = {"latency": 0.5, "latency_80": 0.8}
# The default takes about 5 minutes on a 2-core machine where one worker drains 10,000-20,000
# events/s (most of it spent generating and publishing the latency runs' events); --full is
# issue 7's size (500,000 events for 50,000 customers), see docs/performance.md for its duration.
# --quick still drains enough events for a few seconds of steady rate.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"events": 50_000, "customers": 5_000, "sink_rows": 100_000, "decode_n": 50_000,
              "latency_s": 15.0},
    "default": {"events": 100_000, "customers": 10_000, "sink_rows": 500_000,
                "decode_n": 200_000, "latency_s": 30.0},
    "full": {"events": 500_000, "customers": 50_000, "sink_rows": 1_000_000,
             "decode_n": 200_000, "latency_s": 60.0},
}
RESULTS_DIR = REPO_ROOT / "bench" / "results"
# A broker younger than this is still warming up (its JVM compiling the hot paths): said at the
# start of a run, kept in the results as machine.kafka_uptime_s.
WARM_BROKER_S = 600
EPILOG = """\
examples:
  make bench                                           # the default size (see docs/performance.md)
  make bench BENCH_ARGS="--quick"                      # a few minutes
  make bench BENCH_ARGS="--full"                       # 500,000 events for 50,000 customers
  make bench BENCH_ARGS="--phases decode,engine,sink"  # micro-benchmarks only
  make bench BENCH_ARGS="--profile-s 30"               # also profile the e2e worker (perf)
  make bench BENCH_ARGS="--workers 2"                  # two worker processes, one group

Needs the services (make services). --profile-s needs perf (apt install linux-perf), or py-spy
with --profiler py-spy (.venv/bin/pip install py-spy).
"""


def _describe(preset: dict[str, Any]) -> str:
    return f"{preset['events']:,} events for {preset['customers']:,} customers"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=(__doc__ or "").splitlines()[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=None,
                        help=f"events pre-filled for e2e ({PRESETS['default']['events']})")
    parser.add_argument("--customers", type=int, default=None,
                        help=f"customers ({PRESETS['default']['customers']})")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_const", dest="preset", const="quick",
                        help="a short run: " + _describe(PRESETS["quick"]))
    preset.add_argument("--full", action="store_const", dest="preset", const="full",
                        help="the size of issue 7: " + _describe(PRESETS["full"]))
    parser.add_argument("--bad-share", type=float, default=0.001,
                        help="share of deliberately bad events in the pre-fill (0.001; a ninth "
                             "of them are 1 MiB too_large messages)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency-s", type=float, default=None,
                        help="publish time of each latency run (30 s)")
    parser.add_argument("--latency-warmup-s", type=float, default=5.0,
                        help="events published in the first seconds are not measured (5)")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="events/s of the half-load latency run, the 80%% run gets 1.6x "
                             "(default: half the e2e rate)")
    parser.add_argument("--latency-loads", default="50,80",
                        help="which latency runs, in %% of the reference rate (50,80; a "
                             "subset of them, e.g. 50 for a long half-load run alone)")
    parser.add_argument("--poll-ms", type=int, default=1000,
                        help="ClickHouse poll interval for row visibility, a cross-check of the "
                             "sink's histogram (1000: a faster poll loads ClickHouse)")
    parser.add_argument("--sink-rows", type=int, default=None, help="rows written (500000)")
    parser.add_argument("--decode-n", type=int, default=None, help="events per pass (200000)")
    parser.add_argument("--engine-events", type=int, default=50_000)
    parser.add_argument("--engine-customers", type=int, default=2_000)
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes in the e2e and latency phases, one consumer "
                             "group (1)")
    parser.add_argument("--worker-cpu", type=int, default=0,
                        help="core the worker and the ceiling consumer are pinned to (0); the "
                             "sink goes to another core, with the harness")
    parser.add_argument("--worker-cpus", default=None,
                        help="comma-separated core of each worker (default: the worker's core, "
                             "then the next cores in turn)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything to a core")
    parser.add_argument("--broker-warmup-max-s", type=float, default=120.0,
                        help="before the latency phases, run the pipeline until the local "
                             "broker's JIT compiler threads are quiet, at most this long (120; "
                             "0 skips; only a broker started by deploy/local less than 10 "
                             "minutes before)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="e2e limit after the worker is Ready (120 + events/500)")
    parser.add_argument("--profile-s", type=float, default=0.0,
                        help="profile the e2e worker for this long after 15%% of the events")
    parser.add_argument("--profiler", choices=("perf", "py-spy"), default="perf",
                        help="perf (default: on-CPU samples, no slow-down; compiled functions "
                             "by name, each charged with what it calls) or py-spy --native "
                             "(Python names, but it slows the worker by ~40 %%)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs also when every phase succeeded")
    args = parser.parse_args(argv)
    for name, value in PRESETS[args.preset or "default"].items():
        if getattr(args, name) is None:  # explicit flags win over the preset
            setattr(args, name, value)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(PHASES)}")
    loads_pct = {round(f * 100): name for name, f in LATENCY_LOADS.items()}
    picked = {v.strip() for v in args.latency_loads.split(",") if v.strip()}
    if not picked or not picked <= {str(pct) for pct in loads_pct}:
        parser.error(f"--latency-loads {args.latency_loads!r}: choose from "
                     f"{','.join(map(str, sorted(loads_pct)))}")
    args.latency_loads = [loads_pct[pct] for pct in sorted(loads_pct) if str(pct) in picked]
    if args.events < 1 or args.customers < 1:
        parser.error("--events and --customers must be >= 1")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.worker_cpus is not None:
        try:
            args.worker_cpus = [int(c) for c in args.worker_cpus.split(",") if c.strip()]
        except ValueError:
            parser.error("--worker-cpus takes core numbers, e.g. 0,1")
        if len(args.worker_cpus) != args.workers:
            parser.error(f"--worker-cpus names {len(args.worker_cpus)} cores for "
                         f"{args.workers} workers")
    return args


def worker_cores(args: argparse.Namespace, worker_cpu: int | None, nproc: int
                 ) -> list[int | None]:
    """The core of each worker: ``--worker-cpus``, else the worker's core and then the next
    cores in turn; all None when nothing is pinned."""
    if worker_cpu is None:
        return [None] * args.workers
    if args.worker_cpus is not None:
        return list(args.worker_cpus)
    return [(worker_cpu + i) % nproc for i in range(args.workers)]


# ---------------------------------------------------------------------------- facts


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=30, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def git_facts() -> Git:
    commit = _git("rev-parse", "HEAD") or "unknown"
    short = _git("rev-parse", "--short", "HEAD") or "nogit"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return Git(commit=commit, short=short, dirty=dirty)


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_facts(settings: Settings, clickhouse_version: str | None) -> Machine:
    mem_kb = (_proc_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0]
    return Machine(
        nproc=os.cpu_count() or 1, memory_bytes=int(mem_kb) * 1024,
        cpu_model=_proc_field("/proc/cpuinfo", "model name") or platform.processor() or "?",
        python=platform.python_version(), platform=platform.platform(),
        kafka_bootstrap=settings.kafka_bootstrap_servers,
        clickhouse_version=clickhouse_version, loadavg_start=os.getloadavg()[0],
        kafka_uptime_s=service_age_s("kafka", REPO_ROOT / ".state"),
    )


def clickhouse_version(settings: Settings) -> str | None:
    from clickhouse_driver import Client

    ch = settings.clickhouse
    try:
        client = Client(**ch.client_options(), connect_timeout=5)
        version = str(client.execute("SELECT version()")[0][0])
        client.disconnect()
        return version
    except Exception:
        return None


# ---------------------------------------------------------------------------- phases


def say(text: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    print(f"[{stamp}] {text}", file=sys.stderr, flush=True)


def run_ceiling(stack: BenchStack, topic: str, events: int, cpu: int | None,
                timeout_s: float) -> Ceiling:
    cmd = pinned([sys.executable, "-m", "bench.ceiling", "--topic", topic,
                  "--events", str(events), "--timeout-s", str(timeout_s)], cpu)

    def figures(*extra: str) -> dict[str, Any]:
        done = subprocess.run([*cmd, *extra], env={**os.environ, **stack.env()},
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                              timeout=timeout_s + 60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ceiling consumer {' '.join(extra)} exited with "
                               f"{done.returncode}")
        return cast(dict[str, Any], json.loads(done.stdout.strip().splitlines()[-1]))

    ceiling = Ceiling.model_validate(figures())
    ceiling.raw_events_per_s = figures("--raw", "--no-progress")["events_per_s"]
    return ceiling


class Profiler:
    """Starts a profiler (``perf`` or py-spy) once on the (first) e2e worker when enough of
    the backlog is handled."""

    def __init__(self, out: Path, duration_s: float, cpu: int | None, tool: str = "perf") -> None:
        self.out, self.duration_s, self.cpu, self.tool = out, duration_s, cpu, tool
        self.thread: threading.Thread | None = None
        self.error: str | None = None
        self.pid: int | None = None

    def __call__(self, worker: Proc, fraction: float) -> None:
        if self.thread is None and fraction >= 0.15:
            say(f"{self.tool}: sampling the worker (pid {worker.pid}) for "
                f"{self.duration_s:.0f} s")
            self.pid = worker.pid
            self.thread = threading.Thread(target=self._record, args=(worker.pid,), daemon=True)
            self.thread.start()

    def _record(self, pid: int) -> None:
        try:
            if self.tool == "perf":
                done = perf_profile.record(pid, self.out, self.duration_s, cpu=self.cpu)
            else:
                done = profile.record(pid, self.out, self.duration_s, cpu=self.cpu)
            if done.returncode != 0:
                self.error = (done.stderr or "").strip()[-500:]
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def summary(self) -> list[ProfileLine] | None:
        if self.thread is not None:
            self.thread.join(timeout=self.duration_s + 180)
        if not self.out.exists():
            return None
        lines = self.out.read_text().splitlines()
        if self.tool == "perf":  # the event-loop thread: its id is the process id
            return perf_profile.owners(perf_profile.parse(lines), tid=self.pid)
        return profile.summarize(profile.parse(lines))


def _phase(result: BenchResult, name: str, action: Callable[[], None]) -> None:
    """Run one phase; a failure is recorded in ``result.errors`` and the run goes on."""
    say(f"--- {name}")
    try:
        action()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        traceback.print_exc()
        result.errors[name] = f"{type(exc).__name__}: {exc}"


def run(args: argparse.Namespace) -> BenchResult:
    base = Settings()
    started_at = datetime.now(timezone.utc)
    git = git_facts()
    nproc = os.cpu_count() or 1
    pin = not args.no_pin and shutil.which("taskset") is not None and nproc >= 2
    worker_cpu = args.worker_cpu if pin else None
    harness_cpu = (1 if worker_cpu == 0 else 0) if pin else None
    if harness_cpu is not None:
        # The harness (publishers, pollers, the sink bench) stays off the worker's core.
        os.sched_setaffinity(0, {harness_cpu})
    # The sink shares the harness's core (and the services'): it never takes the worker's.
    sink_cpu = harness_cpu
    timeout_s = args.timeout_s or 120 + args.events / 500
    params = Params(
        events=args.events, customers=args.customers, bad_share=args.bad_share, seed=args.seed,
        touchpoint_partitions=base.touchpoint_partitions, worker_cpu=worker_cpu,
        harness_cpu=harness_cpu, workers=args.workers,
        worker_cpus=worker_cores(args, worker_cpu, nproc), sink_cpu=sink_cpu,
        latency_s=args.latency_s, latency_warmup_s=args.latency_warmup_s,
        broker_warmup_max_s=args.broker_warmup_max_s,
        latency_rate_per_s=args.latency_rate,
        latency_loads=[LATENCY_LOADS[n] for n in args.latency_loads],
        poll_ms=args.poll_ms, sink_rows=args.sink_rows, decode_n=args.decode_n,
        engine_events=args.engine_events, engine_customers=args.engine_customers,
        sink_batch_rows=base.sink_batch_rows, sink_batch_ms=base.sink_batch_ms,
        profile_s=args.profile_s, profiler=args.profiler, phases=args.phases,
    )
    result = BenchResult(
        started_at=started_at, finished_at=started_at, git=git,
        machine=machine_facts(base, clickhouse_version(base)), params=params,
    )
    out = result_path(args.results_dir, started_at, git.short)
    out.parent.mkdir(parents=True, exist_ok=True)  # the profiler writes next to it mid-run
    run_id = uuid.uuid4().hex[:8]
    url = base.clickhouse_url.get_secret_value()
    tmp = Path(tempfile.mkdtemp(prefix=f"cx-bench-{run_id}-"))
    stacks: list[BenchStack] = []
    say(f"run {run_id} at {git.short}{' (dirty)' if git.dirty else ''}: "
        f"{args.events:,} events, {args.customers:,} customers; {args.workers} worker(s) on "
        f"cpu {params.worker_cpus}, sink and harness on cpu {harness_cpu}; logs in {tmp}; "
        f"load average {os.getloadavg()[0]:.2f}")
    kafka_age_s = result.machine.kafka_uptime_s
    if kafka_age_s is not None and kafka_age_s < WARM_BROKER_S:
        say(f"the broker started {kafka_age_s:.0f} s ago: its JIT compiler still works on its hot "
            f"paths (the first run after a start measured the half-load latencies 5-20 times "
            f"higher, docs/performance.md); "
            + ("the latency phases wait until it is quiet (--broker-warmup-max-s)."
               if args.broker_warmup_max_s > 0 else
               "warning: --broker-warmup-max-s 0: compare runs made later."))
    try:
        if {"ceiling", "e2e", "latency"} & set(args.phases):
            _service_phases(args, result, stacks, run_id, url, tmp, timeout_s, out)
        if "sink" in args.phases:
            def sink() -> None:
                from bench.sink_bench import bench_sink, make_rows

                say(f"building {args.sink_rows:,} rows")
                result.sink = bench_sink(make_rows(args.sink_rows), url=url)
            _phase(result, "sink", sink)
        # The micro-benchmarks run on the worker's core, idle by now, with the services kept
        # off it: on the services' core they also measured ClickHouse still at work on the
        # phases' rows (decode 4.45 us an event in one run against 2.72-2.76 in the others).
        micro_cpu = worker_cpu if {"decode", "engine"} & set(args.phases) else None
        with services_off_cpu(micro_cpu, REPO_ROOT / ".state"), on_cpu(micro_cpu):
            if micro_cpu is not None:
                say(f"decode and engine on cpu {micro_cpu} (the worker's), services kept off it")
            if "decode" in args.phases:
                def decode() -> None:
                    from bench.decode_bench import bench_decode

                    result.decode = bench_decode(args.decode_n)
                _phase(result, "decode", decode)
            if "engine" in args.phases:
                def engine() -> None:
                    from bench.engine_bench import bench_engine

                    result.engine = bench_engine(args.engine_events, args.engine_customers)
                _phase(result, "engine", engine)
    except KeyboardInterrupt:
        result.errors["interrupted"] = "stopped by Ctrl-C; figures so far are kept"
    finally:
        for stack in stacks:
            for problem in stack.cleanup():
                say(f"cleanup: {problem}")
        if result.errors or args.keep_logs:  # a failed phase: the processes' logs say why
            say(f"logs of this run kept in {tmp}"
                f"{' (a phase failed)' if result.errors else ''}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result.finished_at = datetime.now(timezone.utc)
    result.machine.loadavg_end = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(BenchResult.model_validate_json(result.to_json()).to_json() + "\n")
    return result


def _service_phases(args: argparse.Namespace, result: BenchResult, stacks: list[BenchStack],
                    run_id: str, url: str, tmp: Path, timeout_s: float, out: Path) -> None:
    from bench.broker_warmup import warm_broker
    from bench.e2e import Prefill, prefill, run_latency, run_throughput

    base = Settings()
    params = result.params
    worker_cpu, harness_cpu = params.worker_cpu, params.harness_cpu
    tput = BenchStack(base.kafka_bootstrap_servers, url, tmp, "tput", run_id=run_id,
                      kafka_security=base.kafka_security)
    stacks.append(tput)
    fill: Prefill | None = None
    if {"ceiling", "e2e"} & set(args.phases):
        say(f"creating topics and database {tput.database}; pre-filling {args.events:,} events "
            f"for {args.customers:,} customers")
        tput.create()
        fill = prefill(tput, events=args.events, customers=args.customers, seed=args.seed,
                       bad_share=args.bad_share)
        say(f"pre-filled {fill.events:,} events ({fill.bad:,} bad) in {fill.seconds:.1f} s")
    # Throughput phases: the worker gets its core to itself (the local services move to the
    # other cores, where the sink and the harness run).
    with services_off_cpu(worker_cpu if fill is not None else None,
                          REPO_ROOT / ".state") as moved:
        result.params.services_moved = moved
        if moved:
            say(f"{', '.join(moved)} kept off cpu {worker_cpu} for the throughput phases")
        if fill is not None and "ceiling" in args.phases:
            filled = fill

            def ceiling() -> None:
                result.ceiling = run_ceiling(tput, filled.topic, filled.events, worker_cpu,
                                             timeout_s)
            _phase(result, "ceiling", ceiling)
        if fill is not None and "e2e" in args.phases:
            filled = fill
            profiler = None
            if args.profile_s > 0:
                suffix = "-profile.perf.txt" if args.profiler == "perf" else "-profile.folded"
                profiler = Profiler(out.with_name(out.stem + suffix), args.profile_s,
                                    harness_cpu, args.profiler)

            def e2e() -> None:
                done = run_throughput(tput, filled, customers=args.customers,
                                      worker_cpus=params.worker_cpus, sink_cpu=params.sink_cpu,
                                      timeout_s=timeout_s, on_worker=profiler)
                e = done.end_to_end
                c = result.ceiling
                if c is not None and e.events_per_s_metrics:
                    e.ratio_to_ceiling = round(e.events_per_s_metrics / c.events_per_s, 3)
                if c is not None and c.events_per_cpu_s and e.events_per_cpu_s:
                    e.ratio_to_ceiling_cpu = round(e.events_per_cpu_s / c.events_per_cpu_s, 3)
                result.end_to_end, result.resources = e, done.resources
                if profiler is not None:
                    result.profile = profiler.summary()
                    result.profile_file = os.path.relpath(profiler.out, REPO_ROOT)
                    if profiler.error:
                        result.errors["profile"] = profiler.error
            _phase(result, "e2e", e2e)
    # Latency phases: the worker keeps its core too (its latency is what is measured); the
    # publisher (librdkafka), the poller, the sink and the services share the other cores.
    with services_off_cpu(worker_cpu if "latency" in args.phases else None,
                          REPO_ROOT / ".state") as moved_for_latency:
        if moved_for_latency:
            say(f"{', '.join(moved_for_latency)} kept off cpu {worker_cpu} for the latency "
                "phases")
        def reference_rate() -> float:
            if args.latency_rate is not None:  # stands for half the e2e rate
                return float(args.latency_rate / LATENCY_LOADS["latency"])
            e = result.end_to_end
            if e is None or not e.events_per_s_metrics:
                raise RuntimeError("no e2e rate measured: pass --latency-rate")
            return float(e.events_per_s_metrics)

        kafka_pid = service_pid("kafka", REPO_ROOT / ".state")
        if "latency" in args.phases and warm_up_broker(
                kafka_pid, result.machine.kafka_uptime_s, args.broker_warmup_max_s):
            assert kafka_pid is not None

            def warmup() -> None:
                rate = reference_rate() * LATENCY_LOADS[args.latency_loads[0]]
                say(f"warming the broker's JIT: {rate:,.0f} events/s until its compiler "
                    f"threads are quiet (at most {args.broker_warmup_max_s:.0f} s)")
                warm = BenchStack(base.kafka_bootstrap_servers, url, tmp, "warmup",
                                  run_id=run_id, kafka_security=base.kafka_security)
                result.broker_warmup = warm_broker(
                    warm, pid=kafka_pid, worker_cpus=params.worker_cpus,
                    sink_cpu=params.sink_cpu, rate_per_s=rate, customers=args.customers,
                    seed=args.seed + 100, max_s=args.broker_warmup_max_s)
                done = result.broker_warmup
                say(f"broker warm-up: {done.seconds:.0f} s, compiler threads "
                    f"{done.compiler_cpu_s:.1f} CPU s, {'quiet' if done.quiet else 'NOT quiet'}")
            _phase(result, "broker_warmup", warmup)
        if "latency" in args.phases:
            for field, fraction in LATENCY_LOADS.items():
                if field not in args.latency_loads:
                    continue
                def latency(field: str = field, fraction: float = fraction) -> None:
                    reference = reference_rate()
                    rate = reference * fraction
                    lat = BenchStack(base.kafka_bootstrap_servers, url, tmp,
                                     f"lat{round(fraction * 100)}", run_id=run_id,
                                     kafka_security=base.kafka_security)
                    stacks.append(lat)
                    lat.create()
                    others = [c for c in range(os.cpu_count() or 1)
                              if c not in params.worker_cpus]
                    waited_s, busy = wait_quiet(others)
                    say(f"cpu {','.join(map(str, others))} quiet after {waited_s:.0f} s "
                        f"(busy {busy:.0%}; threshold {QUIET_BUSY_MAX:.0%}, at most "
                        f"{QUIET_TIMEOUT_S:.0f} s)")
                    say(f"latency: fresh worker(s) and sink, {rate:,.0f} events/s "
                        f"({fraction:.0%} of {reference:,.0f}) for {args.latency_s:.0f} s")
                    setattr(result, field, run_latency(
                        lat, rate_per_s=rate, load_fraction=fraction, duration_s=args.latency_s,
                        warmup_s=args.latency_warmup_s, customers=args.customers, seed=args.seed,
                        worker_cpus=params.worker_cpus, sink_cpu=params.sink_cpu,
                        poll_ms=args.poll_ms,
                        neighbours=neighbours(moved_for_latency, others, harness_cpu),
                    ))
                    for problem in lat.cleanup():  # its topics, database and state go now
                        say(f"cleanup: {problem}")
                _phase(result, field, latency)


def warm_up_broker(pid: int | None, age_s: float | None, max_s: float) -> bool:
    """Whether to warm the broker's JIT before the latency phases: a local broker (its pid
    known) younger than :data:`WARM_BROKER_S`, unless ``--broker-warmup-max-s 0``. An older one
    has run traffic before (make bench, make test) and compiled its hot paths."""
    return pid is not None and max_s > 0 and (age_s is None or age_s < WARM_BROKER_S)


def neighbours(moved: list[str], service_cpus: list[int],
               harness_cpu: int | None) -> list[tuple[str, int, int | None]]:
    """The processes beside the worker(s) and the sink that a latency phase keeps busy, as
    (name, pid, core): the local services found by their pid files (a service ``moved`` to
    ``service_cpus`` is on that core when it is one) and this process, the harness."""
    state_dir = REPO_ROOT / ".state"
    found = []
    for name in LOCAL_SERVICES:
        pid = service_pid(name, state_dir)
        if pid is not None:
            on_one = name in moved and len(service_cpus) == 1
            found.append((name, pid, service_cpus[0] if on_one else None))
    return [*found, ("harness", os.getpid(), harness_cpu)]


def main(argv: list[str] | None = None) -> int:
    extra = shlex.split(os.environ.get("BENCH_ARGS", ""))
    args = parse_args(extra + (sys.argv[1:] if argv is None else argv))
    began = time.monotonic()
    result = run(args)
    print()
    print(format_table(table_rows(result)))
    for lat in (result.latency, result.latency_80):
        if lat is not None and lat.event_to_alert_by_rule:
            print(f"\npublish->alert by rule at {lat.rate_per_s:,.0f} ev/s (p50 / p99 / max ms):")
            for rule, st in lat.event_to_alert_by_rule.items():
                print(f"  {rule:24} n={st.count:<6} {st.p50_ms} / {st.p99_ms} / {st.max_ms}")
        if lat is not None and lat.event_to_alert_by_second:
            worst = sorted(lat.event_to_alert_by_second, key=lambda s: -s.max_ms)[:3]
            slow = sum(s.over_goal for s in lat.event_to_alert_by_second)
            print(f"publish->alert at {lat.rate_per_s:,.0f} ev/s: {slow} of "
                  f"{lat.event_to_alert.count} over the goal; slowest seconds (second: n, "
                  "p50 / max ms, over the goal): " + "; ".join(
                      f"{s.second}: {s.count}, {s.p50_ms} / {s.max_ms}, {s.over_goal}"
                      for s in worst))
    if result.profile and result.params.profiler == "perf":
        print("\nworker main thread (perf), compiled functions by the share of samples they own "
              "(with what they call that is not compiled) and inclusive:")
        for line in result.profile[:20]:
            print(f"  {line.self_pct:5.1f}% own {line.total_pct:5.1f}% total  {line.function}")
    elif result.profile:
        print("\nworker main thread, top functions by self time (% of samples):")
        for line in result.profile[:15]:
            print(f"  {line.self_pct:5.1f}% self {line.total_pct:5.1f}% total  {line.function}")
    out = result_path(args.results_dir, result.started_at, result.git.short)
    print(f"\n{len(result.errors)} phase(s) failed; " if result.errors else "\n", end="")
    print(f"took {time.monotonic() - began:.0f} s; figures in {out.relative_to(REPO_ROOT)}"
          if out.is_relative_to(REPO_ROOT) else f"figures in {out}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
