"""docker-compose.yml, parsed (no Docker engine on CI): every long-running service restarts by
itself, the one-shot init is retried on failure, and the worker and the sink have healthchecks
on their /healthz port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


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
        port = service["ports"][0].split(":")[0]
        assert f"127.0.0.1:{port}/healthz" in command, name
        assert check["retries"] >= 1 and check["interval"]
        # Docker's default grace (10 s) would SIGKILL a stop that is still committing.
        assert int(service["stop_grace_period"].rstrip("s")) > 10, name


def test_every_service_with_a_port_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if service.get("ports"):
            assert "healthcheck" in service, name
