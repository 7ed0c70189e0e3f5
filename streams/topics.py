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
