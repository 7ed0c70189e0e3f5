import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from streams.health import Health, health_problems, serve_health


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def served() -> Iterator[tuple[Health, str]]:
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


def test_a_port_in_use_is_one_clear_error(served: tuple[Health, str]) -> None:
    from streams.health import PortUnavailable

    _health, base = served
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(PortUnavailable, match=f"127.0.0.1:{port}: Address already in use"):
        serve_health(Health(), port)


@pytest.mark.parametrize(("command", "variable"), [("worker", "CX_METRICS_PORT"),
                                                   ("sink", "CX_SINK_METRICS_PORT")])
def test_the_commands_exit_2_with_one_line_when_their_port_is_taken(
    served: tuple[Health, str], command: str, variable: str, tmp_path: object,
) -> None:
    import os
    import subprocess
    import sys

    port = served[1].rsplit(":", 1)[1]
    env = {**os.environ, variable: port, "CX_STATE_DIR": str(tmp_path),
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "cxsignals.cli", command], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"127.0.0.1:{port}: Address already in use" in output
    assert variable in output and "Traceback" not in output
