"""Experience score (0-100, 50 neutral) with event-time decay, and journey stage.

The score keeps one number, ``score_sum`` S: the sum of every signal weight times
``2 ** (-(watermark - t) / half_life)``, referenced to the customer's watermark (highest event
time). Moving the watermark forward multiplies S by the decay of the gap; a late event adds its
weight already decayed to the watermark. S is therefore the same whatever the arrival order
(up to float rounding). The score is ``50 + 50 * tanh(S / 50)``: about one point per point of S
near neutral, saturating smoothly toward 0 and 100.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Final

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
    """Add an event's signals (event time ``t`` <= watermark) to the score and the signal list.

    The list keeps the ``MAX_SIGNALS`` signals with the largest decayed size. Ranking by
    ``log2|w| + t / half_life`` equals ranking by decayed size at any reference time, so what is
    kept does not depend on when the list was trimmed.
    """
    assert state.watermark is not None
    if not signals:
        return  # most events (clean page views) carry none
    factor = decay(state.watermark - t, half_life_s)
    kept = state.signals
    ranked = state.signal_ranks
    if ranked is not None and (ranked[0] is not kept or ranked[1] != half_life_s
                               or len(ranked[2]) != len(kept)):
        ranked = None  # the list was replaced or changed elsewhere: rank it again
    for name, weight in signals:
        state.score_sum += weight * factor
        kept.append((t, weight, name, event_id))
    excess = len(kept) - MAX_SIGNALS
    if excess <= 0:
        state.signal_ranks = None  # appended, not sorted
        return
    if ranked is None:  # a stable sort of the indices by rank: each rank computed once
        records: list[Any] = kept  # indexed, not unpacked (see rule_evaluators._browse_intent)
        all_ranks = [_rank(r[0], r[1], half_life_s) for r in records]
        order = sorted(range(len(all_ranks)), key=all_ranks.__getitem__)
        kept[:] = [records[i] for i in order]
        ranks = array("d", [all_ranks[i] for i in order])
    else:
        # The kept list is sorted by rank, its ranks remembered: place each new signal after
        # the equal ranks (bisect_right), in order, as the stable sort above would.
        ranks = ranked[2]
        new = kept[len(ranks):]
        del kept[len(ranks):]
        for rec in new:
            rank = _rank(rec[0], rec[1], half_life_s)
            at = bisect_right(ranks, rank)
            ranks.insert(at, rank)
            kept.insert(at, rec)
    del kept[:excess]
    del ranks[:excess]
    state.signal_ranks = (kept, half_life_s, ranks)


def _rank(t: float, weight: float, half_life_s: float) -> float:
    """A signal's place in the kept list: larger decayed size, higher rank."""
    return math.log2(abs(weight) or 1e-12) + t / half_life_s


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
