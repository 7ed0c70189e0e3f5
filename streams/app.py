"""The single Faust app of CX Signals.

Settings come only from :class:`cxsignals.settings.Settings`: Faust is given ``env={}`` so its own
environment names (``BROKER_URL``, ``WEB_PORT``, ...) cannot silently override them.
Agents, topics and tables live in the modules named after them (``streams.topics``,
``streams.tables``, ``streams.agents``); importing ``streams.agents`` registers every agent.
"""

from __future__ import annotations

import faust

from cxsignals.settings import Settings, get_settings
from streams.transport import CxApp

# Events up to the contract's limit (1 MiB) must reach the worker so that it can dead-letter them
# as too_large; the broker and topics allow 2 MiB.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024 + 4096


def create_app(settings: Settings) -> faust.App:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return CxApp(
        settings.app_id,
        env={},
        broker=settings.kafka_broker_url,
        store=settings.store_url,
        datadir=str(settings.state_dir),
        autodiscover=False,
        # Our /metrics endpoint is prometheus-client's; Faust's web server stays off so that
        # several workers on one host need no port juggling.
        web_enabled=False,
        topic_partitions=settings.touchpoint_partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        producer_max_batch_size=settings.producer_batch_bytes,
        stream_buffer_maxsize=settings.stream_buffer_events,
        broker_commit_interval=1.0,
        table_cleanup_interval=300.0,
        logging_config=None,
    )


app: faust.App = create_app(get_settings())
