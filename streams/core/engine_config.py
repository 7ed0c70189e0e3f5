"""The engine's scoring parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.core.churn import ChurnAdjustments
from streams.core.churn_model import PUBLISHED, ChurnModel
from streams.core.signals import SignalWeights
from streams.core.windows import DAY_S


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scoring parameters, built with keywords by the worker (``streams.app.build_engine``)."""

    grace_s: float = 3600.0
    half_life_days: float = 14.0
    score_publish_step: float = 2.0
    # Churn: the fitted model (params file, else the published parameters) and the horizon.
    churn_model: ChurnModel = PUBLISHED
    churn_horizon_days: float = 90.0
    churn: ChurnAdjustments = field(default_factory=ChurnAdjustments)
    weights: SignalWeights = field(default_factory=SignalWeights)
    explanation_top: int = 5
    # Re-evaluate idle customers' churn risk as time passes (docs/scoring.md, "Time-aware
    # risk"), looking this far ahead for the next crossing; 0 turns it off.
    idle_risk_horizon_days: float = 400.0

    @property
    def half_life_s(self) -> float:
        return self.half_life_days * DAY_S
