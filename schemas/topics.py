"""The pipeline's topics by role, with their default names (defined once here).

Operators rename topics with ``CX_TOPIC_<ROLE>`` (for example ``CX_TOPIC_TOUCHPOINTS``,
``CX_TOPIC_DLQ``, ``CX_TOPIC_SINK_DLQ``); the internal re-keying topic is always
``<app id>.touchpoints.keyed``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The names of one pipeline's topics, one field per role."""

    touchpoints: str = "cx.touchpoints"
    dead_letters: str = "cx.touchpoints.dlq"
    alerts_marketing: str = "cx.alerts.marketing"
    alerts_support: str = "cx.alerts.support"
    scores: str = "cx.scores"
    # Rows ClickHouse cannot take, with the record they came from (written by the sink only).
    sink_dead_letters: str = "cx.sink.dlq"
    # Control alerts (held back by a rule's control_share): read by the sink only, never by the
    # consumers of the alert topics (docs/alerts.md "Control groups").
    alerts_control: str = "cx.alerts.control"

    def keyed(self, app_id: str) -> str:
        """The internal topic that re-keys events by customer id (same partition count as the
        touchpoints, so that a customer's events and state share a partition)."""
        return f"{app_id}.touchpoints.keyed"

    def outputs(self) -> tuple[str, ...]:
        """The topics the worker publishes and the sink stores (besides the touchpoints)."""
        return (self.alerts_marketing, self.alerts_support, self.scores, self.dead_letters,
                self.alerts_control)
