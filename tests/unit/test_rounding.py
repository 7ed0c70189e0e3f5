"""streams.core.rounding.round_to gives the double ``round`` gives, bit for bit."""

from __future__ import annotations

import math
import random
import struct

import pytest

from streams.core.rounding import MAX_DIGITS, round_to


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)  # tells -0.0 from 0.0 and compares NaN


def _assert_same(x: float, digits: int) -> None:
    assert _bits(round_to(x, digits)) == _bits(round(x, digits)), (x, digits)


def _values(rng: random.Random, digits: int) -> list[float]:
    scale = 10.0**digits
    values = []
    for _ in range(20_000):
        magnitude = 10.0 ** rng.uniform(-8, 16)
        values.append(rng.choice((1, -1)) * rng.random() * magnitude)
        # Ties and their neighbours: (k + 1/2) / 10**digits, as parsed and one ulp either side.
        k = rng.randrange(-10**9, 10**9) if rng.random() < 0.5 else rng.randrange(-300, 300)
        tie = (k + 0.5) / scale
        values += [tie, math.nextafter(tie, math.inf), math.nextafter(tie, -math.inf)]
        # Decimals as written (scores, risks, money) and exact binary fractions (0.125).
        values.append(float(f"{rng.uniform(-1000, 1000):.{digits + 1}f}"))
        values.append(rng.randrange(-4096, 4096) / 2 ** rng.randrange(1, 12))
    return values


@pytest.mark.parametrize("digits", range(MAX_DIGITS + 1))
def test_round_to_is_round_bit_for_bit(digits: int) -> None:
    rng = random.Random(digits)
    for x in _values(rng, digits):
        _assert_same(x, digits)


@pytest.mark.parametrize("x", [0.0, -0.0, -0.001, 0.004999, 0.005, 0.015, 0.125, -0.125, 2.675,
                               1e-320, -5e-324, 1e15, 2.0**50, 1e300, math.inf, -math.inf,
                               math.nan, 49.995, 99.995, 0.49999999999999994])
def test_round_to_on_edges(x: float) -> None:
    for digits in (*range(MAX_DIGITS + 1), 7, 12, -1):
        _assert_same(x, digits)
