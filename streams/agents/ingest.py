"""The ingest agent: validate every touchpoint message (provisional: scoring is wired next)."""

from __future__ import annotations

from faust import StreamT

from schemas.events import touchpoint_adapter
from streams import metrics
from streams.topics import touchpoints


@touchpoints.app.agent(touchpoints, name="ingest")
async def ingest(stream: StreamT[bytes]) -> None:
    async for value in stream:
        metrics.messages_consumed.labels(touchpoints.get_topic_name()).inc()
        try:
            event = touchpoint_adapter.validate_json(value)
        except ValueError:
            continue
        metrics.events_processed.labels(event.event_type).inc()
