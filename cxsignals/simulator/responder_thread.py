"""The responder of ``cxsignals simulate --respond``: a background thread next to the publisher.

Delivery and failure behaviour: those of :class:`~cxsignals.simulator.response.Responder`; an
error in the thread is printed and ends the thread (the simulation itself goes on).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from cxsignals.settings import Settings
from cxsignals.simulator.publisher import make_producer
from cxsignals.simulator.response import Responder, ResponseModel


class ResponderThread:
    """Polls the marketing alert topic while the simulation publishes; :meth:`finish` keeps
    reacting until idle and closes the clients."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self._publishing = threading.Event()
        self._publishing.set()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="responder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._publishing.is_set() and not self._stop.is_set():
                self.responder.poll()
        except Exception as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, idle_s: float, max_s: float) -> None:
        self._publishing.clear()
        self._thread.join()
        try:
            if self.error is None:
                self.responder.run_until_idle(idle_s, max_s)
        except KeyboardInterrupt:
            pass
        finally:
            self.responder.close()
            self.responder.producer.close()
        if self.error is not None:
            print(f"responder stopped: {self.error!r}", file=sys.stderr)

    def summary(self) -> str:
        r = self.responder
        return (f"{r.alerts_seen} alerts read, {r.reactions} reactions published, "
                f"{r.pending} still pending, {r.undecodable} undecodable")


def start_responder(model: ResponseModel, settings: Settings, touchpoint_topic: str
                    ) -> ResponderThread:
    """Connect (raises BrokerUnavailable) and start polling the marketing alert topic."""
    from kafka import KafkaConsumer

    def consumer(topic: str) -> Any:
        return KafkaConsumer(
            topic, bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
            **settings.kafka_security.kafka_python_options(),
        )

    # The responder reads the marketing alerts and writes touchpoints: with the least-privilege
    # principals of docs/security.md neither cx-publisher nor cx-reader may do both (it is a
    # local simulation tool; run it on the PLAINTEXT listener).
    producer = make_producer(settings.kafka_bootstrap_servers,
                             security=settings.kafka_security)
    responder = Responder(model, settings.topic_alerts_marketing, touchpoint_topic, consumer,
                          producer)
    responder.poll(timeout_ms=0)  # subscribe now, so that no alert is missed
    return ResponderThread(responder)
