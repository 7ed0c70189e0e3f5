"""Alert messages on ``cx.alerts.marketing`` and ``cx.alerts.support`` (key = customer_id).

``alert_id`` is deterministic (rule, customer and triggering event ids), so a replay yields the
same id and downstream services deduplicate on it. See docs/alerts.md.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class AlertKind(str, Enum):
    marketing = "marketing"
    support = "support"


class Contribution(BaseModel):
    """One signal's signed contribution to a score, and the event behind it."""

    model_config = ConfigDict(frozen=True)

    signal: str
    contribution: float
    event_id: str


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_id: str
    rule: str
    kind: AlertKind
    customer_id: str
    event_time: AwareDatetime
    emitted_at: AwareDatetime
    experience_score: float = Field(ge=0, le=100)
    churn_risk: float = Field(ge=0, le=1)
    explanation: list[Contribution] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    action: str
    context: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        """The published JSON of this alert (the value of its ``cx.alerts.*`` record)."""
        return self.__pydantic_serializer__.to_json(self)
