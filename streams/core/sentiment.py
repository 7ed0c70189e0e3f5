"""Sentiment of free-text comments, behind a one-method interface.

The engine and the sink call the analyzer through :func:`comment_sentiment`, only for a comment
that is not empty or only whitespace. The text itself is never stored in the state or in alerts
(personal data); only the compound score is used.

:class:`VaderAnalyzer` is VADER 3.3.2's ``compound`` score (the ``vaderSentiment`` package: its
lexicons, constants and rules), computed without the parts of ``polarity_scores`` the score does
not need and without its repeated work: the library lower-cases the whole comment again for each
of up to three negation checks of every sentiment word, formats five n-gram strings for the
idiom check of every such word, walks every character looking for emojis in a comment that has
no character outside ASCII, and computes the positive, negative and neutral shares that
:meth:`VaderAnalyzer.compound` drops. Compiled with the engine (streams/core/native.py). In the
worker a survey comment cost ~90 us against ~30 us for one without (2026-12-07, full states: 5 %
of the events and ~10 % of the pipeline's CPU); tests/unit/test_sentiment.py checks that the
scores equal the library's, to the last bit, on the library's own examples, the simulator's
comments and thousands of generated ones (negations, boosters, "but", "least", idioms, capitals,
punctuation, emoticons and emojis).
"""

from __future__ import annotations

import string
from typing import Final, Protocol

from vaderSentiment.vaderSentiment import (
    BOOSTER_DICT,
    C_INCR,
    N_SCALAR,
    NEGATE,
    SPECIAL_CASES,
    SentimentIntensityAnalyzer,
    allcap_differential,
    normalize,
)

_PUNCTUATION: Final = string.punctuation
_NEGATE: Final = frozenset(NEGATE)
_BOOSTERS: Final[dict[str, float]] = {k: float(v) for k, v in BOOSTER_DICT.items()}
_SPECIAL: Final[dict[str, float]] = {k: float(v) for k, v in SPECIAL_CASES.items()}


class SentimentAnalyzer(Protocol):
    def compound(self, text: str) -> float:
        """Sentiment of ``text`` in [-1, 1] (-1 most negative, 0 neutral, 1 most positive)."""
        ...


def comment_sentiment(analyzer: SentimentAnalyzer, comment: str | None) -> float | None:
    """The score of a survey comment, None when there is none: absent, empty or only whitespace.
    The engine (its comment signals, detractor rule) and the sink (``sentiment`` /
    ``has_sentiment``) both ask this, so a comment counts as scored in both or in neither."""
    return analyzer.compound(comment) if comment and not comment.isspace() else None


def _negated(word: str) -> bool:
    """VADER's ``negated([word])`` for one lower-cased word."""
    return word in _NEGATE or "n't" in word


class VaderAnalyzer:
    """VADER (Hutto & Gilbert, 2014), an offline lexicon and rule based analyzer for short text.

    Its ``compound`` score is the normalized sum of the valences, in [-1, 1]; VADER's authors
    treat ``|compound| < 0.05`` as neutral. English only. Constructing it loads the library's
    lexicons (tens of milliseconds): build one per process and share it. Pure and deterministic:
    it keeps no state between calls. Never raises for a ``str``.
    """

    def __init__(self) -> None:
        library = SentimentIntensityAnalyzer()
        self._lexicon: dict[str, float] = {k: float(v) for k, v in library.lexicon.items()}
        self._emojis: dict[str, str] = dict(library.emojis)
        # The emoji pass is skipped for ASCII text, which holds no emoji of today's lexicon.
        self._ascii_emojis = any(key.isascii() for key in self._emojis)

    def compound(self, text: str) -> float:
        """``SentimentIntensityAnalyzer().polarity_scores(text)["compound"]``, faster."""
        if self._ascii_emojis or not text.isascii():
            text = self._describe_emojis(text)
        text = text.strip()
        words = [_strip_punctuation(token) for token in text.split()]
        lower = [w.lower() for w in words]
        n = len(words)
        if n == 0:
            return 0.0
        cap_diff: bool = allcap_differential(words)
        lexicon = self._lexicon
        sentiments: list[float] = []
        for i in range(n):
            low = lower[i]
            if low in _BOOSTERS:
                sentiments.append(0.0)
                continue
            if i < n - 1 and low == "kind" and lower[i + 1] == "of":
                sentiments.append(0.0)
                continue
            valence = 0.0
            if low in lexicon:
                valence = self._valence(words, lower, i, cap_diff)
            sentiments.append(valence)
        if "but" in lower:
            _but_check(lower.index("but"), sentiments)
        return _compound(sentiments, text)

    def _describe_emojis(self, text: str) -> str:
        """The library's emoji pass: each emoji replaced by its description, set off by a space
        unless one precedes it."""
        emojis = self._emojis
        out: list[str] = []
        prev_space = True
        for ch in text:
            description = emojis.get(ch)
            if description is not None:
                if not prev_space:
                    out.append(" ")
                out.append(description)
                prev_space = False
            else:
                out.append(ch)
                prev_space = ch == " "
        return "".join(out)

    def _valence(self, words: list[str], lower: list[str], i: int, cap_diff: bool) -> float:
        """``sentiment_valence`` of the lexicon word at ``i`` (the library's order of
        operations, so that the floats come out the same)."""
        lexicon = self._lexicon
        n = len(words)
        low = lower[i]
        valence = lexicon[low]
        if low == "no" and i != n - 1 and lower[i + 1] in lexicon:
            valence = 0.0
        if ((i > 0 and lower[i - 1] == "no") or (i > 1 and lower[i - 2] == "no")
                or (i > 2 and lower[i - 3] == "no" and lower[i - 1] in ("or", "nor"))):
            valence = lexicon[low] * N_SCALAR
        if cap_diff and words[i].isupper():
            if valence > 0:
                valence += C_INCR
            else:
                valence -= C_INCR
        for start_i in range(3):
            if i > start_i and lower[i - (start_i + 1)] not in lexicon:
                before = i - (start_i + 1)
                s = _scalar_inc_dec(words[before], lower[before], valence, cap_diff)
                if start_i == 1 and s != 0:
                    s = s * 0.95
                if start_i == 2 and s != 0:
                    s = s * 0.9
                valence = valence + s
                valence = _negation_check(valence, lower, start_i, i)
                if start_i == 2:
                    valence = _special_idioms_check(valence, lower, i)
        # _least_check
        if i > 1 and lower[i - 1] not in lexicon and lower[i - 1] == "least":
            if lower[i - 2] != "at" and lower[i - 2] != "very":
                valence = valence * N_SCALAR
        elif i > 0 and lower[i - 1] not in lexicon and lower[i - 1] == "least":
            valence = valence * N_SCALAR
        return valence


def _strip_punctuation(token: str) -> str:
    """Leading and trailing punctuation off, unless that leaves two characters or fewer (an
    emoticon such as ``:)``)."""
    stripped = token.strip(_PUNCTUATION)
    return token if len(stripped) <= 2 else stripped


def _scalar_inc_dec(word: str, low: str, valence: float, cap_diff: bool) -> float:
    scalar = 0.0
    boost = _BOOSTERS.get(low)
    if boost is not None:
        scalar = boost
        if valence < 0:
            scalar *= -1
        if cap_diff and word.isupper():
            if valence > 0:
                scalar += C_INCR
            else:
                scalar -= C_INCR
    return scalar


def _negation_check(valence: float, lower: list[str], start_i: int, i: int) -> float:
    if start_i == 0:
        if _negated(lower[i - 1]):
            valence = valence * N_SCALAR
    elif start_i == 1:
        if lower[i - 2] == "never" and (lower[i - 1] == "so" or lower[i - 1] == "this"):
            valence = valence * 1.25
        elif lower[i - 2] == "without" and lower[i - 1] == "doubt":
            pass
        elif _negated(lower[i - 2]):
            valence = valence * N_SCALAR
    else:
        if (lower[i - 3] == "never" and (lower[i - 2] == "so" or lower[i - 2] == "this")
                or (lower[i - 1] == "so" or lower[i - 1] == "this")):
            valence = valence * 1.25
        elif lower[i - 3] == "without" and (lower[i - 2] == "doubt" or lower[i - 1] == "doubt"):
            pass
        elif _negated(lower[i - 3]):
            valence = valence * N_SCALAR
    return valence


def _special_idioms_check(valence: float, lower: list[str], i: int) -> float:
    """The library's idiom pass for the word at ``i`` (``i >= 3``)."""
    w3, w2, w1, w0 = lower[i - 3], lower[i - 2], lower[i - 1], lower[i]
    onezero = f"{w1} {w0}"
    twoonezero = f"{w2} {w1} {w0}"
    twoone = f"{w2} {w1}"
    threetwoone = f"{w3} {w2} {w1}"
    threetwo = f"{w3} {w2}"
    for seq in (onezero, twoonezero, twoone, threetwoone, threetwo):
        special = _SPECIAL.get(seq)
        if special is not None:
            valence = special
            break
    n = len(lower)
    if n - 1 > i:
        special = _SPECIAL.get(f"{w0} {lower[i + 1]}")
        if special is not None:
            valence = special
    if n - 1 > i + 1:
        special = _SPECIAL.get(f"{w0} {lower[i + 1]} {lower[i + 2]}")
        if special is not None:
            valence = special
    for n_gram in (threetwoone, threetwo, twoone):
        boost = _BOOSTERS.get(n_gram)
        if boost is not None:
            valence = valence + boost
    return valence


def _but_check(bi: int, sentiments: list[float]) -> None:
    """The library's contrastive "but", quirks included: each value is looked up by equality
    (``list.index``), so of equal values the first one is scaled, once per occurrence."""
    for sentiment in list(sentiments):
        si = sentiments.index(sentiment)
        if si < bi:
            sentiments.pop(si)
            sentiments.insert(si, sentiment * 0.5)
        elif si > bi:
            sentiments.pop(si)
            sentiments.insert(si, sentiment * 1.5)


def _compound(sentiments: list[float], text: str) -> float:
    """``score_valence``'s compound: the sum, emphasised by ``!`` and ``?``, normalized by the
    library's ``normalize``."""
    sum_s = float(sum(sentiments))
    ep_count = text.count("!")
    if ep_count > 4:
        ep_count = 4
    amplifier = ep_count * 0.292
    qm_count = text.count("?")
    qm_amplifier = 0.0
    if qm_count > 1:
        qm_amplifier = qm_count * 0.18 if qm_count <= 3 else 0.96
    amplifier = amplifier + qm_amplifier
    if sum_s > 0:
        sum_s += amplifier
    elif sum_s < 0:
        sum_s -= amplifier
    return round(float(normalize(sum_s)), 4)
