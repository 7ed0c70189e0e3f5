"""VaderAnalyzer gives the vaderSentiment library's compound score, bit for bit."""

from __future__ import annotations

import random

import pytest
from vaderSentiment.vaderSentiment import (
    BOOSTER_DICT,
    NEGATE,
    SPECIAL_CASES,
    SentimentIntensityAnalyzer,
)

from cxsignals.simulator.comments import COMPLAINTS, LUKEWARM, PRAISE, PRAISE_SUPPORT
from streams.core.sentiment import VaderAnalyzer

# The library's own examples (vaderSentiment.py, __main__), each exercising one of its rules.
LIBRARY_EXAMPLES = [
    "VADER is smart, handsome, and funny.",
    "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.",
    "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.",
    "The book was good.",
    "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today SUX!",
    "Today only kinda sux! But I'll get by, lol",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad at all",
]
EDGE_CASES = ["", " ", "\t\n", "!!!", "??", "💘", "💘💘 great", "great💘", "no", "no good",
              "not", "but", "BUT good", "good but bad but good", "kind of", "kind of great",
              "at least good", "very least good", "least good", "the shit", "this is the bomb",
              "never so good", "without doubt good", "bus stop sad", "yeah right, great",
              "it is to die for", "I'm not happy ;-(", "NOT GOOD. not good.", "good :) :("]
SIMULATOR_COMMENTS = [t for texts in COMPLAINTS.values() for t in texts] + [
    *PRAISE, *PRAISE_SUPPORT, *LUKEWARM]


@pytest.fixture(scope="module")
def library() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


@pytest.fixture(scope="module")
def fast() -> VaderAnalyzer:
    return VaderAnalyzer()


def _generated(library: SentimentIntensityAnalyzer, count: int, seed: int) -> list[str]:
    """Comments built to reach every rule: lexicon words, boosters (also as bigrams), negations
    and contractions, the words the rules look for, idioms, capitals, punctuation attached and
    alone, emoticons, emojis with and without spaces, odd whitespace."""
    rng = random.Random(seed)
    rule_words = ["no", "least", "kind", "of", "but", "never", "so", "this", "without", "doubt",
                  "at", "very", "or", "nor", "the", "shit", "bomb", "bad", "ass", "yeah", "right",
                  "kiss", "death", "to", "die", "for", "beating", "heart", "bus", "stop", "sort",
                  "just", "enough", "isn't", "can't"]
    pool = [*sorted(library.lexicon), *BOOSTER_DICT, *NEGATE, *SPECIAL_CASES, *rule_words * 30]
    plain = ["the", "a", "service", "app", "delivery", "is", "was", "I", "it", "and"]
    punctuation = ["", "", ",", ".", "!", "?", "!!", "??", "!!!", "???", "!?", ":)", ":D",
                   ":-(", "..."]
    emojis = sorted(library.emojis)
    texts = []
    for _ in range(count):
        words = []
        for _ in range(rng.randint(0, 14)):
            word = rng.choice(pool) if rng.random() < 0.8 else rng.choice(plain)
            shape = rng.random()
            word = word.upper() if shape < 0.15 else word.capitalize() if shape < 0.25 else word
            if rng.random() < 0.3:
                word += rng.choice(punctuation)
            if rng.random() < 0.05:
                word = rng.choice(punctuation) + word
            if rng.random() < 0.05:
                word = rng.choice(emojis) + rng.choice(["", " "]) + word
            words.append(word)
        sep = rng.choice([" ", " ", "  ", "\t", " \n"])
        texts.append(rng.choice(["", " "]) + sep.join(words) + rng.choice(["", " ", "!", "?!"]))
    return texts


def test_the_fixed_texts_score_as_the_library_scores_them(
    library: SentimentIntensityAnalyzer, fast: VaderAnalyzer
) -> None:
    for text in LIBRARY_EXAMPLES + EDGE_CASES + SIMULATOR_COMMENTS:
        expected = library.polarity_scores(text)["compound"]
        got = fast.compound(text)
        assert type(got) is float
        assert got == expected, text


def test_generated_comments_score_as_the_library_scores_them(
    library: SentimentIntensityAnalyzer, fast: VaderAnalyzer
) -> None:
    texts = _generated(library, 12_000, seed=20261207)
    mismatches = [(t, library.polarity_scores(t)["compound"], fast.compound(t)) for t in texts]
    mismatches = [m for m in mismatches if m[1] != m[2]]
    assert mismatches == []
    # The corpus reaches the rules that change a score, not only plain lexicon words.
    lowered = [t.lower() for t in texts]
    assert sum("but" in t.split() for t in lowered) > 100
    assert sum("least" in t for t in lowered) > 100
    assert sum(any(case in t for case in SPECIAL_CASES) for t in lowered) > 20
    assert sum(not t.isascii() for t in texts) > 1000
    assert len({library.polarity_scores(t)["compound"] for t in texts[:2000]}) > 500


def test_the_emoji_pass_matches_with_emojis_next_to_words_and_spaces(
    library: SentimentIntensityAnalyzer, fast: VaderAnalyzer
) -> None:
    emojis = sorted(library.emojis)[:200]
    for emoji in emojis:
        for text in (emoji, f"bad{emoji}", f"{emoji}good", f"ok {emoji} ok", f"{emoji} {emoji}x"):
            assert fast.compound(text) == library.polarity_scores(text)["compound"], text
