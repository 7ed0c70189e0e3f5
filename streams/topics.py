"""Topics of the pipeline. Keys and values are raw bytes: decoding is the agents' job, so that a
message that does not decode reaches the dead-letter topic byte-for-byte."""

from __future__ import annotations

from cxsignals.settings import get_settings
from streams.app import app

_settings = get_settings()

touchpoints = app.topic(_settings.topic_touchpoints, key_type=bytes, value_type=bytes)
dead_letters = app.topic(_settings.topic_dlq, key_type=bytes, value_type=bytes)
alerts_marketing = app.topic(_settings.topic_alerts_marketing, key_type=bytes, value_type=bytes)
alerts_support = app.topic(_settings.topic_alerts_support, key_type=bytes, value_type=bytes)
scores = app.topic(_settings.topic_scores, key_type=bytes, value_type=bytes)

# Internal repartition topic: events whose message key is not the customer they belong to
# (stitched anonymous events, mis-keyed producers) and timer ticks, re-keyed by customer id so
# that they reach the partition holding that customer's state.
keyed = app.topic(
    f"{_settings.app_id}.touchpoints.keyed",
    key_type=bytes,
    value_type=bytes,
    partitions=_settings.touchpoint_partitions,
    internal=True,
)
