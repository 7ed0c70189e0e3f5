"""Kafka over SASL_SSL with least-privilege ACLs and ClickHouse over TLS with its users, against
the secured listener of deploy/local (docs/security.md).

Each test gets its own topics (``it-<id>.*``) and app id (``it-<id>-app``, so that the worker's
PREFIXED grants on its app id do not cover the topics), and exactly the ACLs that
``cxsignals acls apply`` would give the three principals for those names, applied as cx-admin
over SASL_SSL and removed afterwards. Every output, log line and /metrics page the tests see is
searched for the passwords.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cxsignals.acls_cmd import Grant, apply_grants, grants, remove_grants
from streams.kafka_security import KafkaSecurity
from tests.integration.conftest import Stack, WorkerProcess
from tests.integration.secured import KAFKA_KEYS, Secured, load_secured
from tests.integration.services import REPO, free_port, http_get, wait_until

WRONG_PASSWORD = "not-the-password-0f9a3c"


@pytest.fixture(scope="module")
def secured() -> Secured:
    return load_secured()


def _security(env: dict[str, str]) -> KafkaSecurity:
    return KafkaSecurity(protocol=env["KAFKA_SECURITY_PROTOCOL"],
                         sasl_mechanism=env["KAFKA_SASL_MECHANISM"],
                         sasl_username=env["KAFKA_SASL_USERNAME"],
                         sasl_password=env["KAFKA_SASL_PASSWORD"],
                         ssl_cafile=env["KAFKA_SSL_CAFILE"])


class SecuredStack:
    """A test's names on the secured services, with its ACLs; records every output seen."""

    def __init__(self, stack: Stack, secured: Secured) -> None:
        self.stack = stack
        self.secured = secured
        self.app_id = f"it-{stack.run_id}-app"
        self.outputs: list[str] = []
        self.procs: list[WorkerProcess] = []
        settings = stack.settings(CX_APP_ID=self.app_id)
        self.topics = settings.topics
        self.grants: list[Grant] = grants(settings.topics, self.app_id)
        self.admin_bootstrap = secured.admin["KAFKA_BOOTSTRAP_SERVERS"]
        self.admin_security = _security(secured.admin)

    def env(self, role: dict[str, str], **overrides: str) -> dict[str, str]:
        env = self.stack.env(CX_APP_ID=self.app_id)
        env.update({key: role[key] for key in KAFKA_KEYS})
        # ClickHouse over TLS, as `default` in the test's own database (cx_writer may only
        # touch `cx`; test_clickhouse_users checks that).
        env["CLICKHOUSE_URL"] = (f"{self.secured.clickhouse_tls}/{self.stack.database}"
                                 f"?ca_certs={self.secured.ca_file}")
        env.update(overrides)
        return env

    def cli(self, role: dict[str, str], *args: str, **overrides: str
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "cxsignals.cli", *args],
            env={**os.environ, **self.env(role, **overrides)}, capture_output=True, text=True,
            timeout=120, check=False, cwd=REPO)
        self.outputs += [done.stdout, done.stderr]
        return done

    def setup(self) -> None:
        apply_grants(self.admin_bootstrap, self.admin_security, self.grants)
        for args in (("topics", "create"), ("migrate",)):
            done = self.cli(self.secured.admin, *args)
            assert done.returncode == 0, f"cxsignals {' '.join(args)} as cx-admin: {done.stderr}"

    def start(self, command: str, role: dict[str, str], *, ready: bool = True,
              **overrides: str) -> WorkerProcess:
        port_env = "CX_METRICS_PORT" if command == "worker" else "CX_SINK_METRICS_PORT"
        port = free_port()
        log_path = self.stack.tmp / f"{command}-{len(self.procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cxsignals.cli", command, "--loglevel", "info"],
                env={**os.environ, **self.env(role, **overrides), port_env: str(port)},
                stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
        process = WorkerProcess(proc=proc, log_path=log_path, metrics_port=port)
        self.procs.append(process)
        if ready:
            def is_ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{command} exited with {proc.returncode}:\n"
                                         f"{process.log()}")
                return "Ready" in process.log()

            wait_until(is_ready, 90, f"`cxsignals {command}` over SASL_SSL to report Ready")
        return process

    def scrape(self, process: WorkerProcess) -> str:
        for path in ("/metrics", "/healthz"):
            try:
                self.outputs.append(http_get(f"http://127.0.0.1:{process.metrics_port}{path}"))
            except urllib.error.HTTPError as exc:  # /healthz answers 503 while unhealthy
                self.outputs.append(exc.read().decode(errors="replace"))
        return self.outputs[-1]

    def close(self) -> None:
        for process in self.procs:
            process.stop()
            self.outputs.append(process.log())
        remove_grants(self.admin_bootstrap, self.admin_security, self.grants)

    def assert_no_secret(self, *extra: str) -> None:
        secrets = [*self.secured.secrets(), *extra]
        assert len(secrets) >= 6
        for n, text in enumerate(self.outputs):
            for secret in secrets:
                assert secret not in text, f"a password appears in output #{n}:\n{text[:2000]}"


@pytest.fixture
def secure(stack: Stack, secured: Secured) -> Iterator[SecuredStack]:
    test_stack = SecuredStack(stack, secured)
    test_stack.setup()
    yield test_stack
    test_stack.close()


def _count(secure: SecuredStack, table: str) -> Callable[[], int]:
    from clickhouse_driver import Client

    from sinks.config import ClickHouseParams

    params = ClickHouseParams.from_url(secure.env(secure.secured.worker)["CLICKHOUSE_URL"])
    client = Client(**params.client_options(), database=params.database)
    return lambda: int(client.execute(f"SELECT count() FROM {table}")[0][0])


def test_worker_sink_and_simulator_run_end_to_end_over_sasl_ssl_as_their_principals(
        secure: SecuredStack) -> None:
    secured = secure.secured
    worker = secure.start("worker", secured.worker)
    sink = secure.start("sink", secured.worker)
    assert "SASL_SSL SCRAM-SHA-512 as cx-worker" in worker.log()
    assert "(TLS)" in sink.log()

    sent = secure.cli(secured.publisher, "simulate", "--customers", "40", "--events", "800",
                      "--rate", "0", "--no-progress", "--seed", "7")
    assert sent.returncode == 0, sent.stderr
    assert "800 of 800 messages delivered" in sent.stderr

    events, alerts = _count(secure, "touchpoint_events"), _count(secure, "alerts")
    # The simulator's deliberately bad events are dead-lettered, not stored as events.
    wait_until(lambda: events() >= 700 and alerts() > 0, 60,
               "the worker's alerts and the sink's rows in ClickHouse (over TLS)")
    assert worker.metric("cx_events_processed_total") >= 700

    # cx-reader reads the scores (and alerts), as `cxsignals tail` over SASL_SSL.
    read = secure.cli(secured.reader, "tail", "scores", "--from-beginning", "--limit", "3",
                      "--idle-timeout-s", "10")
    assert read.returncode == 0, read.stderr
    assert len(read.stdout.splitlines()) == 3 and '"customer_id"' in read.stdout
    for process in (worker, sink):
        secure.scrape(process)
    secure.assert_no_secret()


def test_wrong_password_plaintext_client_and_unauthorized_principal_fail_clearly(
        secure: SecuredStack, secured: Secured) -> None:
    wrong = secure.cli(secured.publisher, "simulate", "--events", "5", "--rate", "0",
                       KAFKA_SASL_PASSWORD=WRONG_PASSWORD)
    assert wrong.returncode == 2
    assert ("authentication failed: Kafka at " in wrong.stderr
            and "refused the SCRAM-SHA-512 credentials of user 'cx-publisher'" in wrong.stderr)

    plaintext = secure.cli(secured.publisher, "simulate", "--events", "5", "--rate", "0",
                           KAFKA_SECURITY_PROTOCOL="PLAINTEXT", KAFKA_SSL_CAFILE="")
    assert plaintext.returncode == 2
    assert ("closed the connection during the PLAINTEXT handshake: this listener probably "
            "expects TLS and SASL") in plaintext.stderr

    for topic in ("marketing", "support"):
        peek = secure.cli(secured.publisher, "tail", topic, "--from-beginning",
                          "--idle-timeout-s", "3")
        assert peek.returncode == 2
        assert ("is not readable as SASL_SSL SCRAM-SHA-512 as cx-publisher: the Kafka ACLs do "
                "not allow this principal to read it") in peek.stderr
    forged = secure.cli(secured.publisher, "simulate", "--events", "5", "--rate", "0",
                        "--topic", secure.topics.alerts_marketing)
    assert forged.returncode == 2
    assert "not authorized to write to topic" in forged.stderr

    # The worker keeps waiting (as for a broker that is down), saying why in its log and
    # /healthz, without the password.
    worker = secure.start("worker", secured.worker, ready=False,
                          KAFKA_SASL_PASSWORD=WRONG_PASSWORD)
    wait_until(lambda: "authentication failed" in worker.log(), 30,
               "the worker to log the refused credentials")
    wait_until(lambda: "authentication failed" in secure.scrape(worker), 15,
               "/healthz to name the refused credentials")

    # A malformed CLICKHOUSE_URL is reported without the URL (nor its password).
    bad_url = (secured.reader["CLICKHOUSE_URL"].replace("127.0.0.1:", "127.0.0.1:port", 1))
    for command in (("report",), ("migrate",), ("sink",)):
        done = secure.cli(secured.reader, *command, CLICKHOUSE_URL=bad_url)
        assert done.returncode == 2, (command, done.stderr)
        assert "CLICKHOUSE_URL must look like" in done.stderr
    secure.assert_no_secret(WRONG_PASSWORD)


def test_clickhouse_users_over_tls(secured: Secured, tmp_path: Path) -> None:
    """cx_reader reads but cannot write; cx_writer may touch only database cx; `report` runs as
    cx_reader from .state/secure-reader.env."""
    from clickhouse_driver import Client
    from clickhouse_driver.errors import ServerException

    from sinks.config import ClickHouseParams

    writer = ClickHouseParams.from_url(secured.worker["CLICKHOUSE_URL"])
    reader = ClickHouseParams.from_url(secured.reader["CLICKHOUSE_URL"])
    assert writer.secure and reader.secure and (writer.user, reader.user) == ("cx_writer",
                                                                              "cx_reader")
    as_writer = Client(**writer.client_options())
    as_reader = Client(**reader.client_options())
    assert as_reader.execute("SELECT 1") == [(1,)]  # 18.16 has no currentUser()
    as_writer.execute("CREATE TABLE IF NOT EXISTS cx.security_probe (x UInt8) ENGINE = Memory")
    try:
        as_writer.execute("INSERT INTO cx.security_probe VALUES", [(1,)])
        assert as_reader.execute("SELECT count() FROM cx.security_probe")[0][0] >= 1
        for statement in ("INSERT INTO cx.security_probe VALUES",
                          "CREATE TABLE cx.security_probe2 (x UInt8) ENGINE = Memory"):
            with pytest.raises(ServerException) as refused:
                as_reader.execute(statement, [(2,)] if "INSERT" in statement else None)
            assert refused.value.code == 164, refused.value  # READONLY
    finally:
        as_writer.execute("DROP TABLE IF EXISTS cx.security_probe")
    for statement in ("CREATE DATABASE cx_security_probe",
                      "CREATE TABLE default.security_probe (x UInt8) ENGINE = Memory"):
        with pytest.raises(ServerException) as denied:
            as_writer.execute(statement)
        assert denied.value.code == 291, denied.value  # DATABASE_ACCESS_DENIED

    env = {**os.environ, **secured.reader, "CX_STATE_DIR": str(tmp_path)}
    report = subprocess.run([sys.executable, "-m", "cxsignals.cli", "report"], env=env,
                            capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert report.returncode == 0, report.stderr
    assert "CX report" in report.stdout
    for secret in secured.secrets():
        assert secret not in report.stdout + report.stderr


def test_the_secured_listener_refuses_a_client_that_does_not_trust_its_certificate(
        secured: Secured, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=other", "-keyout", str(tmp_path / "k.pem"), "-out",
                    str(other_ca)], check=True, capture_output=True, timeout=60)
    from streams.faust_internals import connection_problem_now

    security = _security({**secured.worker, "KAFKA_SSL_CAFILE": str(other_ca)})
    started = time.monotonic()
    problem = connection_problem_now(secured.worker["KAFKA_BOOTSTRAP_SERVERS"], security)
    assert problem is not None and "is not trusted" in problem and "KAFKA_SSL_CAFILE" in problem
    assert time.monotonic() - started < 10
    assert connection_problem_now(secured.worker["KAFKA_BOOTSTRAP_SERVERS"],
                                  _security(secured.worker)) is None
