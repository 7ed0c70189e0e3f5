"""A benchmark's own slice of the real services: unique topics, consumer groups, ClickHouse
database and state dirs, and the pipeline run as a user runs it: ``cxsignals worker`` (one or
more, one consumer group) and ``cxsignals sink``, each its own process pinned with taskset.

Everything is bounded in time, and :meth:`BenchStack.cleanup` removes what the stack created
(processes stopped, topics and consumer groups deleted with kafka-python's admin client, database
dropped, state dir removed) also after a failure; it never touches names outside its prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxsignals.settings import REPO_ROOT, ClickHouseParams, Settings, namespaced_env
from streams.kafka_security import PLAINTEXT, KafkaSecurity

log = logging.getLogger("bench")

CLI = [sys.executable, "-m", "cxsignals.cli"]
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# A latency phase starts once every core but the worker's was below this busy share for one
# second (or after QUIET_TIMEOUT_S): the previous phase's aftermath is not measured.
QUIET_BUSY_MAX = 0.25
QUIET_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` under ``taskset -c cpu`` when a core is asked for and taskset exists."""
    if cpu is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             interval_s: float = 0.2) -> None:
    """Poll until ``predicate()`` is true; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water resident set (VmHWM of /proc/<pid>/status) while it lives.
    psutil has no peak RSS on Linux, so /proc is read directly; None when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process used so far (all its threads), from /proc; None when
    it is gone. On a shared machine this, not wall time, says what an event costs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# HotSpot names its JIT threads "C1 CompilerThread0", "C2 CompilerThread1", ...; the kernel
# keeps the first 15 characters of a thread's name.
COMPILER_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")


def compiler_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """CPU seconds (user + system) a JVM's JIT compiler threads used so far, from
    ``/proc/<pid>/task/*/stat``; None when the process is gone or has no such threads (not a
    JVM)."""
    tasks = proc / str(pid) / "task"
    try:
        names = os.listdir(tasks)
    except OSError:
        return None
    ticks, found = 0, False
    for task in names:
        try:
            stat = (tasks / task / "stat").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith(COMPILER_THREAD_PREFIXES):
            found = True
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def cpu_busy(cpus: Iterable[int], window_s: float = 1.0) -> float:
    """The busy share (0-1) of the busiest of ``cpus`` over ``window_s``, from /proc/stat
    (everything but idle and iowait counts as busy)."""
    def ticks() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                numbers = [int(v) for v in values]
                idle = numbers[3] + numbers[4]
                out[int(name[3:])] = (sum(numbers), idle)
        return out

    wanted = set(cpus)
    before = ticks()
    time.sleep(window_s)
    after = ticks()
    busy = 0.0
    for cpu in wanted & before.keys() & after.keys():
        total = after[cpu][0] - before[cpu][0]
        idle = after[cpu][1] - before[cpu][1]
        if total > 0:
            busy = max(busy, 1.0 - idle / total)
    return busy


def wait_quiet(cpus: Iterable[int], busy_max: float = QUIET_BUSY_MAX,
               timeout_s: float = QUIET_TIMEOUT_S) -> tuple[float, float]:
    """Wait until each of ``cpus`` was busy less than ``busy_max`` over one second (the
    previous phase's aftermath: topic and database deletion, ClickHouse merges, the broker's
    log flushes), at most ``timeout_s``. Returns (seconds waited, last busy share)."""
    cpus = list(cpus)
    started = time.monotonic()
    busy = cpu_busy(cpus)
    while busy >= busy_max and time.monotonic() - started < timeout_s:
        busy = cpu_busy(cpus)
    return time.monotonic() - started, busy


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Proc:
    """One process of the pipeline under test: ``cxsignals worker`` or ``cxsignals sink``."""

    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    cpu: int | None
    started_s: float
    ready_s: float = 0.0
    ready_cpu_s: float | None = None  # CPU time it had used when it logged Ready

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def name(self) -> str:
        return f"{self.role} {self.pid}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """RuntimeError with the tail of its log when the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.role} exited with {self.proc.returncode}:\n"
                               f"{self.log()[-3000:]}")

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """Whether its /healthz answers 200: a worker has joined its group and recovered its
        tables (until then it reports ``starting``), the sink reaches Kafka and ClickHouse."""
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
                return bool(response.status == 200)
        except (OSError, ValueError):  # 503 (HTTPError is an OSError), not listening yet
            return False

    def samples(self, timeout_s: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of its /metrics as (name, labels, value)."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback)
            text = response.read().decode()
        return [(sample.name, dict(sample.labels), float(sample.value))
                for family in text_string_to_metric_families(text)
                for sample in family.samples]

    def metrics(self, timeout_s: float = 5.0) -> dict[str, float]:
        """Every sample of its /metrics summed over labels, by sample name."""
        sums: dict[str, float] = {}
        for name, _labels, value in self.samples(timeout_s):
            sums[name] = sums.get(name, 0.0) + value
        return sums

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (the worker shuts down cleanly, flushing RocksDB; the sink leaves its group
        without committing the batch in flight), SIGKILL after ``timeout_s``."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class BenchStack:
    """Names unique to one benchmark phase (prefix ``bench-<id>``)."""

    kafka_bootstrap: str
    clickhouse_url: str
    tmp: Path
    label: str
    extra_env: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # Its own admin clients (clean-up); the processes read KAFKA_SECURITY_* from the env.
    kafka_security: KafkaSecurity = PLAINTEXT
    procs: list[Proc] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"bench-{self.run_id}-{self.label}"

    @property
    def database(self) -> str:
        return f"bench_{self.run_id}_{self.label}"

    @property
    def state_dir(self) -> Path:
        return self.tmp / f"{self.prefix}-state"

    def env(self) -> dict[str, str]:
        return {
            **namespaced_env(
                self.prefix, kafka_bootstrap=self.kafka_bootstrap,
                clickhouse_url=self.clickhouse_url, database=self.database,
                state_dir=self.state_dir,
            ),
            **self.extra_env,
        }

    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env())
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def cli(self, *args: str, timeout_s: float = 120.0) -> str:
        """Run ``cxsignals ARGS`` with this stack's env; RuntimeError with stderr on failure."""
        done = subprocess.run([*CLI, *args], env={**os.environ, **self.env()}, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cxsignals {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def create(self) -> None:
        """Topics and database with every migration, as `make setup` does."""
        self.cli("topics", "create")
        self.cli("migrate")

    def worker_state_dir(self, index: int) -> Path:
        return self.state_dir / f"worker-{index}"

    def start(self, worker_cpus: Sequence[int | None], sink_cpu: int | None,
              ready_timeout_s: float = READY_TIMEOUT_S) -> tuple[list[Proc], Proc]:
        """Start one ``cxsignals worker`` per entry of ``worker_cpus`` (pinned there; one group,
        each its own state dir and metrics port) and one ``cxsignals sink`` pinned to
        ``sink_cpu``, all at once, and wait until each logged Ready and its /healthz answers
        200 (a worker's "Ready" comes before its partitions are assigned and its tables
        recovered: a phase that started publishing then measured the start-up)."""
        sink = self._spawn("sink", "sink", sink_cpu, {})
        workers = [
            self._spawn("worker", f"worker-{i}", cpu, {
                "CX_METRICS_PORT": "{port}", "CX_SINK_METRICS_PORT": "0",
                "CX_STATE_DIR": str(self.worker_state_dir(i)),
            })
            for i, cpu in enumerate(worker_cpus)
        ]
        pending = [sink, *workers]

        def ready() -> bool:
            for proc in list(pending):
                proc.check_alive()
                if "Ready" in proc.log() and proc.healthy():
                    proc.ready_s = time.monotonic()
                    proc.ready_cpu_s = cpu_seconds(proc.pid)
                    pending.remove(proc)
            return not pending

        wait_for(ready, ready_timeout_s, "the worker(s) and the sink to report Ready")
        return workers, sink

    def _spawn(self, role: str, label: str, cpu: int | None, env: dict[str, str]) -> Proc:
        port = free_port()
        env = {"CX_SINK_METRICS_PORT": "{port}", **env}
        log_path = self.tmp / f"{self.prefix}-{label}-{len(self.procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                pinned([*CLI, role, "--loglevel", "info"], cpu),
                env={**os.environ, **self.env(),
                     **{k: v.format(port=port) for k, v in env.items()}},
                stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            )
        started = Proc(role=role, proc=proc, log_path=log_path, metrics_port=port, cpu=cpu,
                       started_s=time.monotonic())
        self.procs.append(started)
        return started

    def clickhouse(self) -> Any:
        from clickhouse_driver import Client

        params = ClickHouseParams.from_url(self.env()["CLICKHOUSE_URL"])
        return Client(**params.client_options(), database=params.database,
                      settings={"max_query_size": 4 * 1024 * 1024})

    def cleanup(self) -> list[str]:
        """Stop its processes, delete this stack's topics and groups, drop its database, remove
        its state. Best effort: returns what could not be removed instead of raising."""
        problems: list[str] = []
        for proc in self.procs:
            try:
                proc.stop()
            except Exception as exc:  # keep cleaning up the rest
                problems.append(f"{proc.name}: {exc}")
        problems += _delete_kafka(self.kafka_bootstrap, self.prefix, self.kafka_security)
        try:
            from clickhouse_driver import Client

            params = ClickHouseParams.from_url(self.clickhouse_url)
            admin = Client(**params.client_options())
            admin.execute(f"DROP DATABASE IF EXISTS {self.database}")
            admin.disconnect()
        except Exception as exc:
            problems.append(f"drop database {self.database}: {exc}")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return problems


def _delete_kafka(bootstrap: str, prefix: str, security: KafkaSecurity) -> list[str]:
    from kafka.admin import KafkaAdminClient

    problems: list[str] = []
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{prefix}-cleanup",
                                 request_timeout_ms=30_000, **security.kafka_python_options())
    except Exception as exc:
        return [f"kafka admin: {exc}"]
    try:
        topics = [t for t in admin.list_topics() if t.startswith(prefix)]
        if topics:
            try:
                admin.delete_topics(topics, timeout_ms=30_000)
            except Exception as exc:
                problems.append(f"delete topics {topics}: {exc}")
        groups = [g["group_id"] for g in admin.list_groups()
                  if str(g["group_id"]).startswith(prefix)]
        if groups:
            with contextlib.suppress(Exception):  # a group still settling is expired by Kafka
                admin.delete_groups(groups)
    except Exception as exc:
        problems.append(f"kafka cleanup: {exc}")
    finally:
        admin.close()
    return problems


class GroupLag:
    """Committed offsets and end offsets of a consumer group, via kafka-python."""

    def __init__(self, bootstrap: str, group: str, topics: list[str],
                 security: KafkaSecurity = PLAINTEXT) -> None:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        self.group = group
        self.topics = topics
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{group}-lag",
                                      request_timeout_ms=10_000,
                                      **security.kafka_python_options())
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, request_timeout_ms=10_000,
                                      **security.kafka_python_options())

    def sample(self) -> tuple[int, int]:
        """(sum of committed offsets, total lag) over the group's partitions of ``topics``."""
        from kafka import TopicPartition

        committed = {
            tp: meta.offset
            for tp, meta in self.admin.list_group_offsets({self.group: None})
            .get(self.group, {}).items()
            if tp.topic in self.topics and meta.offset >= 0
        }
        partitions = [TopicPartition(t, p) for t in self.topics
                      for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        ends = self.consumer.end_offsets(partitions) if partitions else {}
        done = sum(committed.values())
        lag = sum(end - committed.get(tp, 0) for tp, end in ends.items())
        return done, lag

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.admin.close()
        with contextlib.suppress(Exception):
            self.consumer.close()


LOCAL_SERVICES = ("kafka", "clickhouse", "prometheus")


def process_age_s(pid: int) -> float | None:
    """Seconds since process ``pid`` started (from /proc), None if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot_uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    # starttime, field 22 of stat (20 after the ") "), in clock ticks since boot
    return max(0.0, boot_uptime_s - int(fields[19]) / os.sysconf("SC_CLK_TCK"))


def service_pid(name: str, state_dir: Path) -> int | None:
    """The pid in the deploy/local pid file of service ``name`` in ``state_dir``; None without
    one (docker compose, a remote broker)."""
    try:
        return int((state_dir / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def service_age_s(name: str, state_dir: Path) -> float | None:
    """How long ago the local service ``name`` started; None when it has no pid file or is
    gone."""
    pid = service_pid(name, state_dir)
    return None if pid is None else process_age_s(pid)


@contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """Run the calling thread on ``cpu`` while the block runs (None: leave it where it is);
    restore its affinity afterwards."""
    if cpu is None:
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


@contextmanager
def services_off_cpu(cpu: int | None, state_dir: Path) -> Iterator[list[str]]:
    """Keep the local services started by ``deploy/local/services.sh`` (found by their pid files
    in ``state_dir``) off ``cpu`` while the block runs, every thread of them; restore their
    affinity afterwards. Yields the services moved (none under docker compose: no pid files)."""
    if cpu is None:
        yield []
        return
    others = set(range(os.cpu_count() or 1)) - {cpu}
    saved: dict[int, set[int]] = {}
    moved: list[str] = []
    for name in LOCAL_SERVICES:
        pid = service_pid(name, state_dir)
        if pid is None:
            continue
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:  # a service that is not running
            continue
        for tid in tids:
            try:
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, others)
            except OSError:  # a thread that ended meanwhile
                continue
        moved.append(name)
    try:
        yield moved
    finally:
        for tid, cpus in saved.items():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, cpus)
