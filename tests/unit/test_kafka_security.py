"""KAFKA_SECURITY_* settings: validated with errors that name the setting and never the secret,
and turned into the options of Faust, aiokafka, kafka-python and librdkafka in one place."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxsignals.settings import Settings, SettingsError, checked_settings, get_settings
from sinks.config import ClickHouseParams
from streams.kafka_security import KafkaSecurity, KafkaSecurityError

SECRET = "s3cret-Pa55word"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A real CA certificate (ssl.create_default_context must load it)."""
    cert = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test-ca", "-keyout", str(tmp_path / "ca.key"), "-out",
                    str(cert)], check=True, capture_output=True, timeout=60)
    return cert


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
                 "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CAFILE",
                 "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_plaintext_is_the_default_and_changes_no_client(env: pytest.MonkeyPatch) -> None:
    security = Settings().kafka_security
    assert security == KafkaSecurity()
    assert security.aiokafka_options() == {"security_protocol": "PLAINTEXT"}
    assert security.kafka_python_options() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None
    assert Settings().worker_config().kafka_security == security


def test_sasl_ssl_reaches_every_client_library(env: pytest.MonkeyPatch, ca_file: Path) -> None:
    env.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    env.setenv("KAFKA_SASL_USERNAME", "cx-worker")
    env.setenv("KAFKA_SASL_PASSWORD", SECRET)
    env.setenv("KAFKA_SSL_CAFILE", str(ca_file))
    settings = Settings()
    security = settings.kafka_security
    assert settings.worker_config().kafka_security == security
    assert settings.sink_config().kafka_security == security

    aio = security.aiokafka_options()
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (aio["sasl_plain_username"], aio["sasl_plain_password"]) == ("cx-worker", SECRET)
    context = aio["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

    kp = security.kafka_python_options()
    assert kp["ssl_cafile"] == str(ca_file) and kp["ssl_check_hostname"] is True
    assert (kp["sasl_mechanism"], kp["sasl_plain_password"]) == ("SCRAM-SHA-512", SECRET)

    rd = security.librdkafka_config()
    assert rd["security.protocol"] == "sasl_ssl" and rd["ssl.ca.location"] == str(ca_file)
    assert rd["sasl.username"] == "cx-worker" and rd["sasl.password"] == SECRET

    import faust

    credentials = security.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    # What Faust hands to each aiokafka client it makes.
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_password"] == SECRET and auth["ssl_context"] is not None
    assert SECRET not in repr(security) and SECRET not in repr(settings)
    assert SECRET not in security.describe() and "cx-worker" in security.describe()


def test_the_faust_app_gets_the_credentials(env: pytest.MonkeyPatch, ca_file: Path,
                                            tmp_path: Path) -> None:
    import faust

    from streams.app import _faust_app
    from streams.config import WorkerConfig

    security = KafkaSecurity(protocol="SASL_SSL", sasl_username="u", sasl_password=SECRET,
                             ssl_cafile=str(ca_file))
    app = _faust_app(WorkerConfig(kafka_security=security, state_dir=tmp_path))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "u"
    assert credentials.password == SECRET


def test_password_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    env.setenv("KAFKA_SASL_USERNAME", "cx-reader")
    env.setenv("KAFKA_SASL_PASSWORD_FILE", str(secret_file))
    assert Settings().kafka_security.sasl_password == SECRET


@pytest.mark.parametrize(("variables", "message"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": SECRET},
     "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"},
     "needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD": SECRET, "KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"},
     "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
     "KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw cannot be read"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CAFILE=/nonexistent/ca.pem cannot be read"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD": SECRET, "KAFKA_SASL_MECHANISM": "GSSAPI"},
     "KAFKA_SASL_MECHANISM must be one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
    ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "KAFKA_SSL_CAFILE": "/etc/hostname"},
     "KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/etc/hostname"},
     "mutual TLS needs both KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE"),
])
def test_wrong_settings_fail_naming_the_setting_never_the_secret(
        env: pytest.MonkeyPatch, variables: dict[str, str], message: str) -> None:
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(KafkaSecurityError) as raised:
        Settings().kafka_security  # noqa: B018
    assert message in str(raised.value)
    with pytest.raises(SettingsError) as checked:
        checked_settings()
    assert message in str(checked.value) and SECRET not in str(checked.value)


def test_the_cli_reports_bad_settings_in_one_line_without_values(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "KAFKA_SASL_PASSWORD": SECRET, "CX_METRICS_PORT": "not-a-port",
           "CLICKHOUSE_URL": f"clickhouse://u:{SECRET}@h:9000/cx"}
    done = subprocess.run([sys.executable, "-m", "cxsignals.cli", "topics", "list"], env=env,
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid settings: METRICS_PORT")
    assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    env["CX_METRICS_PORT"] = "9464"
    done = subprocess.run([sys.executable, "-m", "cxsignals.cli", "topics", "list"], env=env,
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("error: KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME\n")


def test_clickhouse_url_with_tls() -> None:
    params = ClickHouseParams.from_url(f"clickhouses://cx_writer:{SECRET}@h/cx?ca_certs=/x/ca.pem")
    assert (params.secure, params.port, params.ca_certs, params.verify) == (True, 9440,
                                                                            "/x/ca.pem", True)
    options = params.client_options()
    assert options["secure"] is True and options["ca_certs"] == "/x/ca.pem"
    assert options["password"] == SECRET and SECRET not in repr(params)
    assert params.where == "h:9440 (TLS)"
    params = ClickHouseParams.from_url("clickhouse://u:p@h:9441/db?secure=true&verify=false")
    assert (params.secure, params.port, params.verify) == (True, 9441, False)
    plain = ClickHouseParams.from_url("clickhouse://u:p@h/db")
    assert not plain.secure and "secure" not in plain.client_options()
    with pytest.raises(ValueError) as raised:
        ClickHouseParams.from_url(f"clickhouses://u:{SECRET}@h/db?sslmode=require")
    assert "unknown parameter(s) sslmode" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_control_alerts_are_for_the_worker_and_sink_only() -> None:
    from cxsignals.acls_cmd import PUBLISHER, READER, WORKER, grants
    from schemas.topics import TopicNames

    topics = TopicNames()
    on_control = {(g.user, g.operation) for g in grants(topics, "cx-signals")
                  if g.name == topics.alerts_control}
    assert {(WORKER, "READ"), (WORKER, "WRITE")} <= on_control
    assert not {p for p, _ in on_control} & {READER, PUBLISHER}
