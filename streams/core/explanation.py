"""The explanation that comes with every score update and alert: the signals that moved the score
most, in score points."""

from __future__ import annotations

from schemas.records import ContributionRecord
from streams.core.rounding import round_to
from streams.core.scoring import NEUTRAL
from streams.core.state import CustomerState


def explanation(
    state: CustomerState, score: float, half_life_s: float, top: int = 5
) -> list[ContributionRecord]:
    """The ``top`` signals that move the score most, with signed contributions in score points.

    Contributions are the decayed weights scaled by ``(score - 50) / S`` so that, while no
    signal has been trimmed, they add up to ``score - 50``.
    """
    if state.watermark is None or not len(state.signals):
        return []
    w = state.watermark
    s = state.score_sum
    scale = (score - NEUTRAL) / s if abs(s) > 1e-9 else 1.0
    # decay() written inline (2 ** ((t - w) / h) is bit-identical to 2 ** (-(w - t) / h)):
    # this runs for every score update and emitted alert.
    # Largest contribution first; ties by event time, event id, signal name, then list position
    # (what a stable sort on the first four would do), so that tuples sort natively.
    # Only the signals that can be among the ``top`` (KeptSignals.strongest): a full list in
    # rank order offers the last few.
    times, weights, names, ids = state.signals.columns()
    positions = state.signals.strongest(top, half_life_s)
    contributions = [weights[i] * 2.0 ** ((times[i] - w) / half_life_s) * scale
                     for i in positions]
    # Only the contributions at least as large as the top-th largest can be among the top
    # (ties included, for the order below): records are built and sorted for those alone.
    cut = (sorted([abs(c) for c in contributions])[-top] if 0 < top < len(contributions)
           else 0.0)
    ranked = []
    for j, i in enumerate(positions):
        c = contributions[j]
        if abs(c) >= cut:
            ranked.append((-abs(c), times[i], ids[i], names[i], i, c))
    ranked.sort()
    return [
        ContributionRecord(name, round_to(c, 2), eid)
        for _size, _t, eid, name, _i, c in ranked[:top]
        if abs(c) >= 0.005
    ]


class Explainer:
    """The explanation of the state as it is now, computed at most once and only if asked for.

    Alerts and the score update of one event explain the same state; most events publish
    neither, and a suppressed candidate needs none. Build a new one whenever the scores move.
    """

    __slots__ = ("_st", "_half_life_s", "_top", "_value")

    def __init__(self, st: CustomerState, half_life_s: float, top: int) -> None:
        self._st = st
        self._half_life_s = half_life_s
        self._top = top
        self._value: list[ContributionRecord] | None = None

    def __call__(self) -> list[ContributionRecord]:
        if self._value is None:
            st = self._st
            self._value = explanation(st, st.score, self._half_life_s, self._top)
        return self._value
