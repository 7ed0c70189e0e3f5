"""``round(x, digits)`` bit for bit, without the decimal conversion in the usual case.

CPython rounds a float to ``digits`` decimals by writing the exactly rounded decimal string
(round half to even, on the exact binary value) and reading it back: ~0.3 us a call, and every
score update and alert rounds its score, its risk and each contribution of its explanation
(2.6 % of ``bench.engine_bench``). :func:`round_to` gets the same double with arithmetic when
it can prove the answer, and asks ``round`` otherwise:

- ``y = |x| * 10**digits`` is the exact product rounded, and rounding is monotone: every
  half-integer below ``2**50`` is a double, so ``y`` lies on the same side of each one as the
  exact product does, or on it (a tie, or a product that rounded onto one: ``round`` decides).
  Off a half-integer, the nearest integer ``k`` of ``y`` is that of the exact product (no tie
  to break);
- ``k`` and ``10**digits`` are exact doubles and IEEE division rounds correctly, so
  ``k / 10**digits`` is the double nearest to the decimal ``k / 10**digits``: what reading the
  decimal string back gives;
- the sign is the input's (``round(-0.001, 2)`` is ``-0.0``).

On a half-integer, for huge values, infinities and NaN, ``round`` itself answers. Compiled with
the engine (streams/core/native.py); tests/unit/test_rounding.py compares both on about a
million values, ties and their neighbours included. Pure, no I/O.
"""

from __future__ import annotations

import math
from typing import Final

MAX_DIGITS: Final = 6
_SCALES: tuple[float, ...] = tuple(10.0**digits for digits in range(MAX_DIGITS + 1))
_FAST_BELOW: Final = 2.0**50  # |x| * 10**digits below this: k and the fraction are exact


def round_to(x: float, digits: int) -> float:
    """``round(x, digits)`` for ``0 <= digits <= MAX_DIGITS`` (the same double, sign of zero
    included); other ``digits`` go to ``round``."""
    if not 0 <= digits <= MAX_DIGITS:
        return round(x, digits)
    scale = _SCALES[digits]
    y = (x if x >= 0.0 else -x) * scale
    if y < _FAST_BELOW:  # False for NaN and infinities
        whole = int(y)  # the floor: y >= 0
        fraction = y - whole  # exact (Sterbenz for y >= 1)
        if fraction != 0.5:
            if fraction > 0.5:
                whole += 1
            return math.copysign(whole / scale, x)
    return round(x, digits)
