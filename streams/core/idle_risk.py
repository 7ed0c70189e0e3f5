"""Time-aware churn risk: when an idle customer's risk next needs a look.

The churn risk is a function of the evaluation time (``ChurnScorer(state, score, at_s)``): with
no new events it rises as the customer stays away. An event re-scores its customer at the
event's time; between events, :class:`RiskWakeups` finds the earliest time at which the risk of
the unchanged state reaches the next rule threshold above the current risk (``win_back``,
``high_value_at_risk``: every enabled rule with a ``min_churn_risk``) or moves more than the
publish step away from the last published risk. The worker puts that time into the deadline
index, and ``Engine.tick`` re-evaluates the customer then (docs/scoring.md, "Time-aware risk").

Cost: the search runs when the customer has been quiet for ``IDLE_SETTLE_S`` (5 minutes) after
an event, from the timer, and again after each re-evaluation, never per event; per event the
worker pays at most one risk evaluation (:meth:`RiskWakeups.first_look_s`), at the checkpoint.

The search assumes what the scorer promises: with no new events the risk is non-decreasing in
``at_s``. It brackets the crossing by steps that grow geometrically from one hour up to the
horizon, then bisects the bracket, so it costs at most ``2 + SEARCH_BRACKETS +
SEARCH_BISECTIONS`` scorer calls (19), and a crossing found is at most 1/256 of its distance
from the start (or a minute) late, never early: the time returned is one where the condition
holds, so a tick at that time always has something to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from streams.core.churn import ChurnScorer
from streams.core.state import CustomerState
from streams.core.windows import HOUR_S

SEARCH_FIRST_S: Final = float(HOUR_S)  # the first bracket: one hour after the start
SEARCH_GROWTH: Final = 4.0  # each further bracket ends 4x further from the start
SEARCH_BRACKETS: Final = 7  # 4**7 h > 1.8 years: every horizon up to that is bracketed
SEARCH_BISECTIONS: Final = 10
SEARCH_RESOLUTION: Final = 1 / 256  # of the distance from the start ...
SEARCH_MIN_RESOLUTION_S: Final = 60.0  # ... or a minute, whichever is longer
# With a publish step of 0 (publish every change), idle customers are still re-evaluated only
# once their risk moved by this much: a step of 0 would wake them on every checkpoint.
MIN_IDLE_STEP: Final = 0.001
# After an event, the search waits until the customer has been quiet this long (wall clock).
IDLE_SETTLE_S: Final = 300.0
NEVER: Final = float("inf")  # a risk_wake_s: nothing to look at within the horizon


def first_reaching(
    value_at: Callable[[float], float],
    start_s: float,
    end_s: float,
    reached: Callable[[float], bool],
) -> float | None:
    """The earliest time in [start_s, end_s] at which ``reached(value_at(t))`` holds, for a
    ``value_at`` that is monotone in t (so ``reached`` flips at most once); None if it does not
    hold at ``end_s``. The time returned is one where it holds, at most
    ``max(SEARCH_MIN_RESOLUTION_S, (t - start_s) * SEARCH_RESOLUTION)`` after the crossing.
    Costs at most 2 + SEARCH_BRACKETS + SEARCH_BISECTIONS calls of ``value_at``."""
    if reached(value_at(start_s)):
        return start_s
    if end_s <= start_s or not reached(value_at(end_s)):
        return None
    lo = start_s
    step: float = SEARCH_FIRST_S
    hi = end_s
    for _ in range(SEARCH_BRACKETS):
        t = start_s + step
        if t >= end_s:
            break
        if reached(value_at(t)):
            hi = t
            break
        lo = t
        step *= SEARCH_GROWTH
    for _ in range(SEARCH_BISECTIONS):
        if hi - lo <= max(SEARCH_MIN_RESOLUTION_S, (hi - start_s) * SEARCH_RESOLUTION):
            break
        mid = (lo + hi) / 2
        if reached(value_at(mid)):
            hi = mid
        else:
            lo = mid
    return hi


def risk_thresholds(enabled_rules: dict[str, Any]) -> tuple[float, ...]:
    """The ``min_churn_risk`` of every enabled rule that has one, ascending, without repeats."""
    found = {
        float(rule.params.min_churn_risk)
        for rule in enabled_rules.values()
        if hasattr(rule.params, "min_churn_risk")
    }
    return tuple(sorted(found))


class RiskWakeups:
    """When an unchanged state's churn risk next crosses a threshold or the publish step.

    Pure: the answer depends on the state and ``now_s`` only. Thread-compatible.
    """

    __slots__ = ("_scorer", "_thresholds", "_step", "_horizon_s")

    def __init__(
        self,
        scorer: ChurnScorer,
        thresholds: tuple[float, ...],
        publish_step_points: float,
        horizon_s: float,
    ) -> None:
        self._scorer = scorer
        self._thresholds = thresholds
        # In risk x 100, as the engine compares it (it publishes when risk * 100 moved more).
        self._step = max(publish_step_points, MIN_IDLE_STEP * 100)
        self._horizon_s = horizon_s

    def _reached(self, st: CustomerState) -> Callable[[float], bool]:
        """Whether a risk of ``st`` would make the tick act: it reached the next threshold
        above ``st.risk`` or moved more than the publish step from ``st.pub_risk``."""
        risk, pub, step = st.risk, st.pub_risk, self._step
        target = 2.0  # unreachable: no threshold above the current risk
        for threshold in self._thresholds:
            if threshold > risk:
                target = threshold
                break

        def reached(r: float) -> bool:
            # The rules' own tests (win_back: risk_before < threshold <= risk_after) and the
            # engine's publish test, on the same values: when this holds, the tick acts.
            return r >= target or (pub is not None and not abs(r - pub) * 100 <= step)

        return reached

    def next_wakeup_s(self, st: CustomerState, now_s: float) -> float:
        """Epoch seconds (wall clock, never before ``now_s`` or the watermark) at which the
        risk of ``st`` with no new events reaches the next threshold above ``st.risk``, or moves
        more than the publish step from ``st.pub_risk``; ``NEVER`` if neither happens within
        the horizon (or the state has no events). Up to 19 risk evaluations."""
        w = st.watermark
        if w is None:
            return NEVER
        start = w if w > now_s else now_s
        score = st.score
        scorer = self._scorer
        wake = first_reaching(lambda t: scorer(st, score, t), start, start + self._horizon_s,
                              self._reached(st))
        return NEVER if wake is None else wake

    def first_look_s(self, st: CustomerState, now_s: float) -> float:
        """When to look at a customer whose state an event changed (at most one risk
        evaluation): once it has been quiet for ``IDLE_SETTLE_S`` (most customers send more
        events meanwhile, and the search waits for the last of them), or at once if its last
        event is that old already and its risk as of now makes the tick act (back-dated or
        replayed events)."""
        w = st.watermark
        if w is None:
            return NEVER
        if now_s - w >= IDLE_SETTLE_S and self._reached(st)(self._scorer(st, st.score, now_s)):
            return now_s
        return (w if w > now_s else now_s) + IDLE_SETTLE_S
