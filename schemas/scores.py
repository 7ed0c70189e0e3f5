"""Score updates on the compacted ``cx.scores`` topic (key = customer_id)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.alerts import Contribution
from schemas.events import JourneyStage


class ScoreUpdate(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: str
    experience_score: float = Field(ge=0, le=100)
    churn_risk: float = Field(ge=0, le=1)
    journey_stage: JourneyStage
    previous_stage: JourneyStage | None = None
    explanation: list[Contribution] = Field(default_factory=list)
    event_time: AwareDatetime
    updated_at: AwareDatetime
    # Expected spend over the next 12 months (BG/NBD x Gamma-Gamma, discounted; docs/scoring.md).
    # Optional: absent from updates written before it and from customers never scored for it.
    clv_12m: float | None = Field(default=None, ge=0)

    def to_json(self) -> bytes:
        """The published JSON of this update (the value of its ``cx.scores`` record)."""
        return self.__pydantic_serializer__.to_json(self)
