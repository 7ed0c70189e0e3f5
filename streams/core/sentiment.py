"""Sentiment of free-text comments, behind a one-method interface.

The engine calls the analyzer only when an event carries a non-empty comment. The text itself is
never stored in the state or in alerts (personal data); only the compound score is used.
"""

from __future__ import annotations

from typing import Protocol

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


class SentimentAnalyzer(Protocol):
    def compound(self, text: str) -> float:
        """Sentiment of ``text`` in [-1, 1] (-1 most negative, 0 neutral, 1 most positive)."""
        ...


class VaderAnalyzer:
    """VADER (Hutto & Gilbert, 2014), an offline lexicon and rule based analyzer for short text.

    Its ``compound`` score is the normalized sum of the valences, in [-1, 1]; VADER's authors
    treat ``|compound| < 0.05`` as neutral. English only. Constructing it loads the lexicon
    (tens of milliseconds): build one per worker and share it.
    """

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def compound(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])
