"""Where the real services are, for integration tests.

Resolution order, per service: the env var if set (``KAFKA_BOOTSTRAP_SERVERS``, ``CLICKHOUSE_URL``,
``PROMETHEUS_URL``); else testcontainers when a Docker engine answers; else the native services of
deploy/local (started on demand). A service that cannot be reached is a test failure, never a skip:
CI must not go green without the real thing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    clickhouse_url: str
    clickhouse_http: str
    prometheus_url: str
    origin: str


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout_s):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker_endpoints(stack: contextlib.ExitStack) -> Endpoints | None:
    """Start Kafka, ClickHouse and Prometheus containers, or return None without a Docker engine."""
    try:
        from docker.errors import DockerException
        from testcontainers.community.clickhouse import ClickHouseContainer
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.core.container import DockerContainer
    except ImportError:
        return None
    try:
        kafka = KafkaContainer("apache/kafka:3.9.1").with_kraft()
        clickhouse = ClickHouseContainer("clickhouse/clickhouse-server:24.8")
        prometheus = DockerContainer("prom/prometheus:v2.53.2").with_exposed_ports(9090)
    except DockerException:
        return None
    kafka_c = stack.enter_context(kafka)
    ch_c = stack.enter_context(clickhouse)
    prom_c = stack.enter_context(prometheus)
    ch_host = ch_c.get_container_host_ip()
    return Endpoints(
        kafka_bootstrap=kafka_c.get_bootstrap_server(),
        clickhouse_url=f"clickhouse://default:@{ch_host}:{ch_c.get_exposed_port(9000)}/cx",
        clickhouse_http=f"http://{ch_host}:{ch_c.get_exposed_port(8123)}",
        prometheus_url=f"http://{prom_c.get_container_host_ip()}:{prom_c.get_exposed_port(9090)}",
        origin="testcontainers",
    )


def _native_endpoints() -> Endpoints:
    if not (port_open("127.0.0.1", 9092) and port_open("127.0.0.1", 9000)
            and port_open("127.0.0.1", 9090)):
        result = subprocess.run(
            [str(REPO / "deploy" / "local" / "services.sh"), "up"],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                "the native services of deploy/local did not start:\n"
                + result.stdout + result.stderr
            )
    return Endpoints(
        kafka_bootstrap="127.0.0.1:9092",
        clickhouse_url="clickhouse://default:@127.0.0.1:9000/cx",
        clickhouse_http="http://127.0.0.1:8123",
        prometheus_url="http://127.0.0.1:9090",
        origin="deploy/local",
    )


@contextlib.contextmanager
def resolve_endpoints() -> Iterator[Endpoints]:
    with contextlib.ExitStack() as stack:
        env = os.environ
        if "KAFKA_BOOTSTRAP_SERVERS" in env and "CLICKHOUSE_URL" in env:
            yield Endpoints(
                kafka_bootstrap=env["KAFKA_BOOTSTRAP_SERVERS"],
                clickhouse_url=env["CLICKHOUSE_URL"],
                clickhouse_http=env.get("CLICKHOUSE_HTTP_URL", "http://127.0.0.1:8123"),
                prometheus_url=env.get("PROMETHEUS_URL", "http://127.0.0.1:9090"),
                origin="environment",
            )
            return
        docker = None if env.get("CX_SERVICES") == "local" else _docker_endpoints(stack)
        yield docker or _native_endpoints()


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout_s: float = 30) -> None:
    """Send ``sig`` (SIGTERM) to a running ``proc`` and wait; SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_until(predicate: object, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll ``predicate()`` until it is truthy; fail with ``what`` after ``timeout_s``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback)
        return str(response.read().decode("utf-8"))


class PrivateClickHouse:
    """A clickhouse-server of the test's own (Debian package binary) on free ports, so a test
    can stop and restart it without disturbing the shared one."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/cx"

    def start(self, timeout_s: float = 60) -> None:
        binary = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"
        if not Path(binary).exists():
            raise AssertionError("clickhouse-server is not installed: run `make services` first")
        for sub in ("data", "tmp", "user_files", "format_schemas", "logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(REPO / "deploy/local/clickhouse_config.py"),
             "--state", str(self.state_dir), "--logs", str(self.state_dir / "logs"),
             "--tcp-port", str(self.tcp_port), "--http-port", str(self.http_port)],
            check=True,
        )
        log = (self.state_dir / "logs" / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config-file={self.state_dir / 'config.xml'}"], stdout=log, stderr=log
        )
        wait_until(self._ready, timeout_s, f"private ClickHouse on :{self.tcp_port}")

    def _ready(self) -> bool:
        try:
            return http_get(f"http://127.0.0.1:{self.http_port}/ping", 1).strip() == "Ok."
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None
        wait_until(lambda: not port_open("127.0.0.1", self.tcp_port), 30, "ClickHouse to stop")
