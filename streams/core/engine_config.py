"""The engine's scoring parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.core.churn import BgNbdParams, ChurnAdjustments
from streams.core.signals import SignalWeights
from streams.core.windows import DAY_S


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scoring parameters, built with keywords by the worker.

    ``from_settings`` (grace, half-life and publish step from the CLI settings object) is kept only
    for the v1 worker in ``streams/processing.py``; drop it once that is gone.
    """

    grace_s: float = 3600.0
    half_life_days: float = 14.0
    score_publish_step: float = 2.0
    bgnbd: BgNbdParams = field(default_factory=BgNbdParams)
    churn: ChurnAdjustments = field(default_factory=ChurnAdjustments)
    weights: SignalWeights = field(default_factory=SignalWeights)
    explanation_top: int = 5

    @property
    def half_life_s(self) -> float:
        return self.half_life_days * DAY_S

    @classmethod
    def from_settings(cls, settings: Any) -> EngineConfig:
        """Build from ``cxsignals.settings.Settings`` (grace_s, half_life_days, publish step)."""
        return cls(
            grace_s=float(settings.grace_s),
            half_life_days=float(settings.half_life_days),
            score_publish_step=float(settings.score_publish_step),
        )
