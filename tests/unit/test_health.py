import json
import urllib.error
import urllib.request

import pytest

from streams.health import Health, health_problems, serve_health


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def served() -> tuple[Health, str]:
    health = Health()
    server = serve_health(health, 0)
    yield health, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_healthz_says_why_until_the_problem_passes(served: tuple[Health, str]) -> None:
    health, base = served
    assert _get(base + "/healthz") == (200, b'{"status": "ok"}')
    health.problem("kafka", "cannot reach 127.0.0.1:1 (connection refused); retrying")
    status, body = _get(base + "/healthz")
    assert status == 503
    assert json.loads(body) == {"status": "waiting", "problems": {
        "kafka": "cannot reach 127.0.0.1:1 (connection refused); retrying"}}
    assert health_problems._value.get() == 1
    health.clear("kafka")
    health.clear("kafka")
    assert _get(base + "/healthz")[0] == 200
    assert health.ok and health_problems._value.get() == 0


def test_metrics_are_served_on_the_same_port(served: tuple[Health, str]) -> None:
    _, base = served
    status, body = _get(base + "/metrics")
    assert status == 200 and b"cx_health_problems" in body
