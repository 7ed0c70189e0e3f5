"""Plain-English survey comments that match what the simulated customer went through.

A customer who met friction complains about that friction (the most recent pain point first), a
happy one says something positive, a middling one something lukewarm. The wording is clearly
negative or positive so that an offline sentiment analyzer agrees with the numeric answer.
"""

from __future__ import annotations

import random

# Pain point -> complaints about it. Keys are the pain names journeys.py records.
COMPLAINTS: dict[str, tuple[str, ...]] = {
    "payment_failed": (
        "Payment failed twice and nobody called back. Really frustrating.",
        "My card kept getting declined at checkout, terrible experience.",
        "The payment page failed again and again, I almost gave up.",
    ),
    "slow_page": (
        "The website is painfully slow, pages take forever to load.",
        "Awful loading times, I waited ages for every page.",
    ),
    "server_error": (
        "The site kept showing error pages, very annoying.",
        "Error after error on the website, this is really bad.",
    ),
    "app_error": (
        "The app crashed when I tried to check my order. So annoying.",
        "The app keeps crashing, useless and frustrating.",
    ),
    "cart_abandon": (
        "Shipping costs were a nasty surprise at checkout, disappointed.",
        "Checkout was confusing and too expensive, I left annoyed.",
    ),
    "unresolved": (
        "Support did not solve my problem, still waiting for a fix. Terrible.",
        "Nobody could help me, the issue is still not fixed. Very disappointed.",
    ),
    "repeated_contact": (
        "I had to contact support three times and the problem is still not solved. Awful.",
        "Called again and again and nobody cares, horrible service.",
    ),
    "long_wait": (
        "Waited forever on the hotline, terrible service.",
        "Over half an hour on hold, that is unacceptable and frustrating.",
    ),
}

PRAISE: tuple[str, ...] = (
    "Great service, delivery was fast. Love it!",
    "Super easy checkout, I love the app.",
    "Excellent experience, everything worked perfectly.",
    "Really happy with my order, great quality and friendly staff.",
)

PRAISE_SUPPORT: tuple[str, ...] = (
    "The support agent was really helpful and friendly, problem solved quickly. Thank you!",
    "Great support, my issue was fixed in minutes.",
)

LUKEWARM: tuple[str, ...] = (
    "It was okay, nothing special.",
    "Fine overall, delivery could be a bit faster.",
    "Average experience, the prices are alright.",
)


def comment_for(rng: random.Random, happiness: float, pains: list[str], after_support: bool) -> str:
    """A comment consistent with ``happiness`` (0 = furious, 1 = delighted) and the pains met.

    Deterministic for a given ``rng`` state; never longer than the contract's comment limit.
    """
    if happiness < 0.5 and pains:
        return rng.choice(COMPLAINTS[pains[-1]])
    if happiness >= 0.75:
        return rng.choice(PRAISE_SUPPORT if after_support else PRAISE)
    return rng.choice(LUKEWARM)
