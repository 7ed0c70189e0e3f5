"""The secured endpoints of deploy/local (docs/security.md): Kafka's SASL_SSL listener and
ClickHouse's TLS port, with the credentials services.sh wrote to ``.state/secure*.env``.

``CX_SECURE_STATE_DIR`` points at another state dir (a second copy of the services started with
``CX_STATE_DIR=... deploy/local/services.sh up``); the default is the repository's ``.state``.
Missing files fail the test (never skip): CI runs ``make services`` first, which writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.services import REPO

KAFKA_KEYS = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
              "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE")


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Secured:
    state: Path
    worker: dict[str, str]  # secure.env: cx-worker, CLICKHOUSE_URL of cx_writer
    publisher: dict[str, str]
    reader: dict[str, str]  # CLICKHOUSE_URL of cx_reader
    admin: dict[str, str]

    @property
    def ca_file(self) -> str:
        return self.worker["KAFKA_SSL_CAFILE"]

    @property
    def clickhouse_tls(self) -> str:
        """clickhouses://host:port of the TLS port, without user (from cx_writer's URL)."""
        url = self.worker["CLICKHOUSE_URL"]
        return "clickhouses://" + url.split("@", 1)[1].split("/", 1)[0]

    def secrets(self) -> list[str]:
        found = [env["KAFKA_SASL_PASSWORD"] for env in
                 (self.worker, self.publisher, self.reader, self.admin)]
        for env in (self.worker, self.reader):
            found.append(env["CLICKHOUSE_URL"].split("://", 1)[1].split("@", 1)[0]
                         .split(":", 1)[1])
        return [secret for secret in found if secret]


def load_secured() -> Secured:
    state = Path(os.environ.get("CX_SECURE_STATE_DIR") or REPO / ".state")
    names = {"worker": "secure.env", "publisher": "secure-publisher.env",
             "reader": "secure-reader.env", "admin": "secure-admin.env"}
    missing = [name for name in names.values() if not (state / name).is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found in {state}: the secured listener is not set up. "
            "Restart the services with deploy/local/services.sh (down, then up), or point "
            "CX_SECURE_STATE_DIR at a state dir that has them.", pytrace=False)
    envs = {role: read_env_file(state / name) for role, name in names.items()}
    return Secured(state=state, **envs)
