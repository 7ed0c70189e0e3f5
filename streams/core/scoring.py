"""Experience score (0-100, 50 neutral) with event-time decay, and journey stage.

The score keeps one number, ``score_sum`` S: the sum of every signal weight times
``2 ** (-(watermark - t) / half_life)``, referenced to the customer's watermark (highest event
time). Moving the watermark forward multiplies S by the decay of the gap; a late event adds its
weight already decayed to the watermark. S is therefore the same whatever the arrival order
(up to float rounding). The score is ``50 + 50 * tanh(S / 50)``: about one point per point of S
near neutral, saturating smoothly toward 0 and 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from schemas.events import STAGE_ORDER, JourneyStage
from streams.core.signals import Signal
from streams.core.state import MAX_SIGNALS, CustomerState

NEUTRAL: Final = 50.0
SATURATION_POINTS: Final = 50.0
STAGE_WINDOW_S: Final = 30 * 86_400
_STAGE_VALUES_FURTHEST_FIRST: Final = tuple(stage._value_ for stage in reversed(STAGE_ORDER))
_AWARENESS: Final[str] = JourneyStage.awareness._value_


def decay(dt_s: float, half_life_s: float) -> float:
    """Weight left after ``dt_s`` seconds of event time."""
    return 2.0 ** (-dt_s / half_life_s)


def add_signals(
    state: CustomerState, t: float, event_id: str, signals: Sequence[Signal], half_life_s: float
) -> None:
    """Add an event's signals (event time ``t`` <= watermark) to the score and the kept list.

    The list keeps the ``MAX_SIGNALS`` signals with the largest decayed size
    (:class:`streams.core.kept_signals.KeptSignals`).
    """
    assert state.watermark is not None
    if not signals:
        return  # most events (clean page views) carry none
    factor = decay(state.watermark - t, half_life_s)
    for _name, weight in signals:
        state.score_sum += weight * factor
    state.signals.add(t, event_id, signals, MAX_SIGNALS, half_life_s)


def current_stage_value(state: CustomerState) -> str:
    """The furthest journey stage the customer reached in the last 30 days of event time.

    Furthest = latest in awareness < consideration < purchase < usage < loyalty. Using the
    furthest recent stage (not the stage of the last event) keeps the stage from flapping
    between page views and purchases, and lets it fall back once the customer goes quiet.
    Returns the stage's value, as the state stores it.
    """
    assert state.watermark is not None
    horizon = state.watermark - STAGE_WINDOW_S
    seen = state.stage_seen
    # Drop stages not reached within the window (at most 5 keys; usually none is that old).
    if len(seen) > 1 and min(seen.values()) < horizon:
        for key in [k for k, t in seen.items() if t < horizon]:
            del seen[key]
    for value in _STAGE_VALUES_FURTHEST_FIRST:
        t = seen.get(value)
        if t is not None and t >= horizon:
            return value
    return _AWARENESS
