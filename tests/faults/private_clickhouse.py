"""A clickhouse-server of the test's own, for ClickHouse outages (never the shared one).

``private_clickhouse`` starts the Debian clickhouse-server binary (``clickhouse-server`` or
``/usr/sbin/clickhouse-server``, configured like the shared one by
deploy/local/clickhouse_config.py) on free ports with its data in the test's temp dir.
``stop()`` ends it (SIGTERM, or SIGKILL with ``kill=True``) and ``start()`` brings it back on
the same ports with the same data, so a test can take ClickHouse away from a running sink and
give it back. Stopped at teardown.

Use it in a test module with ``from tests.faults.private_clickhouse import private_clickhouse``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.services import PrivateClickHouse, port_open, wait_until


class OwnClickHouse(PrivateClickHouse):
    """:class:`tests.integration.services.PrivateClickHouse` plus a kill -9 and its URLs."""

    def url_for(self, database: str) -> str:
        """``CLICKHOUSE_URL`` of ``database`` on this server."""
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/{database}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if kill and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None
            wait_until(lambda: not port_open("127.0.0.1", self.tcp_port), 30,
                       "ClickHouse to die")
            return
        super().stop()


@pytest.fixture
def private_clickhouse(tmp_path: Path) -> Iterator[OwnClickHouse]:
    """A started private ClickHouse server; stopped at teardown whatever the test left."""
    server = OwnClickHouse(tmp_path / "private-clickhouse")
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)  # a throwaway server: its graceful stop takes ~10 s
