"""docker-compose.yml, parsed (no Docker engine on CI): every long-running service restarts by
itself, the one-shot init is retried on failure, the worker and the sink have healthchecks
on their /healthz port, every published port is bound to 127.0.0.1 and no password is written
in the file (they come from the git-ignored .env, see .env.example)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_long_running_services_restart_unless_stopped() -> None:
    services = _services()
    for name, service in services.items():
        if name == "init":
            continue
        assert service.get("restart") == "unless-stopped", name


def test_the_one_shot_init_is_retried_only_on_failure() -> None:
    assert _services()["init"]["restart"] == "on-failure"


def test_worker_and_sink_healthchecks_read_healthz_on_their_published_port() -> None:
    services = _services()
    for name in ("worker", "sink"):
        service = services[name]
        check = service["healthcheck"]
        command = " ".join(check["test"])
        port = service["ports"][0].rsplit(":", 1)[1]
        assert f"127.0.0.1:{port}/healthz" in command, name
        assert check["retries"] >= 1 and check["interval"]
        # Docker's default grace (10 s) would SIGKILL a stop that is still committing.
        assert int(service["stop_grace_period"].rstrip("s")) > 10, name


def test_every_service_with_a_port_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if service.get("ports"):
            assert "healthcheck" in service, name


def test_every_published_port_is_bound_to_loopback_only() -> None:
    published = 0
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
            assert port.count(":") == 2, (name, port)
            published += 1
    assert published >= 5
    # The KRaft controller is never published.
    assert all(not p.endswith(":9093") for p in _services()["kafka"]["ports"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping, so that it can be checked"
    return {str(k): str(v) for k, v in env.items()}


def test_no_password_is_written_in_compose_they_come_from_the_env_file() -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    envs = [_environment(service) for service in document["services"].values()]
    envs.append({str(k): str(v) for k, v in document["x-cx-env"].items()})
    secrets = 0
    for env in envs:
        for key, value in env.items():
            if "PASSWORD" in key:
                assert value.startswith("${") and value.endswith("}"), (key, value)
                assert ":?" in value, f"{key} must fail when .env does not set it"
                secrets += 1
            if key == "CLICKHOUSE_URL":
                credentials = value.split("://", 1)[1].split("@", 1)[0]
                assert re.fullmatch(r"\$\{CLICKHOUSE_USER[^}]*\}:\$\{CLICKHOUSE_PASSWORD[^}]*\}",
                                    credentials), value
    assert secrets >= 3
    assert "admin/admin" not in COMPOSE.read_text()
    datasources = (REPO / "deploy/grafana/provisioning/datasources/datasources.yml").read_text()
    assert "password: $CLICKHOUSE_PASSWORD" in datasources


def test_the_env_file_is_ignored_and_its_example_is_committed() -> None:
    example = (REPO / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines()
             if "=" in line and not line.startswith("#")}
    assert {"CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= names
    referenced = set()
    for part in COMPOSE.read_text().split("${")[1:]:
        referenced.add(part.split("}", 1)[0].split(":", 1)[0])
    assert referenced <= names, referenced - names
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and ".state/" in ignored
