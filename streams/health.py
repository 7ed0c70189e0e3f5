"""Health of a process (worker or sink), served next to its Prometheus metrics.

A process names the conditions that keep it from doing its work (``kafka``: the broker cannot be
reached; ``clickhouse``: inserts fail; ...) with a human-readable reason, and clears them when
they pass. ``GET /healthz`` answers 200 ``{"status": "ok"}`` when none is set, else 503 with
``{"status": "waiting", "problems": {name: reason}}``; ``/metrics`` (and any other path) serves
the Prometheus registry. Reasons must not contain secrets: callers pass redacted text.

Thread-safe: the event loop sets conditions, the HTTP server thread reads them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, make_wsgi_app

health_problems = Gauge(
    "cx_health_problems", "Conditions that keep this process from doing its work (0 = healthy)"
)


class Health:
    """Named problems, each with its reason; healthy when there is none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}

    def problem(self, name: str, reason: str) -> None:
        """Set (or update) the problem ``name``."""
        with self._lock:
            self._problems[name] = reason
            health_problems.set(len(self._problems))

    def clear(self, name: str) -> None:
        """The problem ``name`` has passed (no-op if it was not set)."""
        with self._lock:
            if self._problems.pop(name, None) is not None:
                health_problems.set(len(self._problems))

    def problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._problems)

    @property
    def ok(self) -> bool:
        with self._lock:
            return not self._problems


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        """Scrapes every few seconds must not fill the log."""


Start = Callable[..., Any]


def health_app(health: Health, registry: CollectorRegistry = REGISTRY) -> Callable[..., Any]:
    """A WSGI app: ``/healthz`` from ``health``, everything else the Prometheus registry."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            problems = health.problems()
            body = {"status": "ok"} if not problems else {"status": "waiting",
                                                         "problems": problems}
            status = "200 OK" if not problems else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


class PortUnavailable(RuntimeError):
    """The health/metrics port cannot be bound (in use, or not allowed)."""


def serve_health(health: Health, port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/healthz`` and ``/metrics`` on ``addr:port`` from a daemon thread.

    Raises :class:`PortUnavailable` (one line: address, port and the reason) when the port
    cannot be bound."""
    try:
        server = make_server(addr, port, health_app(health), _ThreadingWSGIServer,
                             handler_class=_SilentHandler)
    except OSError as exc:
        raise PortUnavailable(f"cannot serve /healthz and /metrics on {addr}:{port}: "
                              f"{exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
