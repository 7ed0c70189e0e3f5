"""The little-endian wire form of the arrays a customer state packs (remembered ids, kept
signals, product views): one place for the byte order.

Compiled with the engine (streams/core/native.py). No I/O.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any, Final

_SWAP: Final = sys.byteorder != "little"


def le_bytes(values: array[Any]) -> bytes:
    """The array's items as little-endian bytes (a copy; ``values`` is not changed)."""
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def extend_le(values: array[Any], data: bytes) -> None:
    """Append the items that :func:`le_bytes` wrote as ``data`` (whole items only: the caller
    checks the length)."""
    if _SWAP:
        more = array(values.typecode)
        more.frombytes(data)
        more.byteswap()
        values.extend(more)
    else:
        values.frombytes(data)
