"""A private Kafka 3.9.1 broker (KRaft, one node) for outage tests: free ports, its own temp dir,
and :meth:`PrivateKafka.stop` / :meth:`PrivateKafka.start` that keep its data dir, so a test can
take the broker away and bring it back without touching the shared one on :9092.

Uses the jars that ``deploy/local/services.sh`` caches (``~/.cache/cxsignals/kafka-3.9.1/libs``)
and the same server.properties template, with ports and paths rewritten. Starting takes a few
seconds (JVM); :meth:`start` returns once the broker answers a metadata request.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.services import REPO, free_port, port_open, stop_process

KAFKA_VERSION = "3.9.1"
CACHE = Path(os.environ.get("CX_CACHE_DIR")
             or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cxsignals")
LIBS = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
TEMPLATE_DIR = REPO / "deploy" / "local" / "kafka"


class PrivateKafka:
    """One KRaft broker+controller on 127.0.0.1:<port>; data kept across stop()/start()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.controller_port = free_port()
        self.data = root / "data"
        self.logs = root / "logs"
        self.proc: subprocess.Popen[bytes] | None = None
        self._configure()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _configure(self) -> None:
        if not (LIBS / ".complete").exists() and not any(LIBS.glob("kafka_2.13-*.jar")):
            pytest.fail(f"Kafka jars missing in {LIBS}: run deploy/local/services.sh up once",
                        pytrace=False)
        self.data.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        props = (TEMPLATE_DIR / "server.properties").read_text()
        props = props.replace("@DATA_DIR@", str(self.data))
        props = props.replace("@CONTROLLER_PORT@", str(self.controller_port))
        props = props.replace("@PLAINTEXT_PORT@", str(self.port))
        # PLAINTEXT only: the outage tests need no SASL_SSL listener (nor its keystore).
        props = re.sub(r",SASL_SSL://127\.0\.0\.1:@SECURE_PORT@", "", props)
        props = "\n".join(line for line in props.splitlines()
                          if not line.startswith(("ssl.", "sasl.", "listener.name.sasl_ssl")))
        props += "\nlog.segment.bytes=16777216\n"
        (self.root / "server.properties").write_text(props)
        log4j = (TEMPLATE_DIR / "log4j.properties").read_text().replace("@LOG_DIR@",
                                                                        str(self.logs))
        log4j = log4j.replace("log4j.rootLogger=INFO", "log4j.rootLogger=WARN")
        (self.root / "log4j.properties").write_text(log4j)
        classpath = f"{LIBS}/*"
        cluster_id = subprocess.run(
            ["java", "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout.strip().splitlines()[-1]
        subprocess.run(
            ["java", "-cp", classpath, f"-Dlog4j.configuration=file:{self.root}/log4j.properties",
             "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.root / "server.properties"), "--ignore-formatted"],
            capture_output=True, check=True, timeout=120,
        )

    def start(self, timeout_s: float = 90) -> None:
        """Start the broker (same ports, same data) and wait until it serves metadata."""
        if self.proc is not None and self.proc.poll() is None:
            return
        out = (self.logs / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            ["java", "-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Djava.awt.headless=true",
             f"-Dlog4j.configuration=file:{self.root}/log4j.properties",
             f"-Dkafka.logs.dir={self.logs}", "-cp", f"{LIBS}/*", "kafka.Kafka",
             str(self.root / "server.properties")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"private kafka exited with {self.proc.returncode}: "
                                     f"{(self.logs / 'stdout.log').read_text()[-3000:]}")
            if port_open("127.0.0.1", self.port) and self._answers():
                return
            time.sleep(0.3)
        raise AssertionError(f"private kafka did not answer on {self.bootstrap} in {timeout_s} s")

    def _answers(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        except Exception:
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def stop(self, timeout_s: float = 30) -> None:
        """Stop the broker (SIGTERM, SIGKILL after ``timeout_s``); the data dir stays."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc, timeout_s=timeout_s)
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """A configured private broker, NOT started (a test may start the worker first)."""
    broker = PrivateKafka(tmp_path_factory.mktemp("private-kafka"))
    try:
        yield broker
    finally:
        broker.close()
