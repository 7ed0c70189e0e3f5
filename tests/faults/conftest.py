"""Fault tests: the worker and the sink against real services that misbehave (poison pills,
outages, restarts, kill -9, rebalances). They reuse the integration fixtures.

``make test`` runs the ones that fit CI's time; tests marked ``chaos`` (long fault loops) run
only under ``make chaos``, which runs this whole directory.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures, re-exported for this dir)
    Stack,
    WorkerProcess,
    cli,
    endpoints,
    stack,
    start_sink,
    start_worker,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
