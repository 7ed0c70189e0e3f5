"""The event ids a customer state remembers: its redelivery guard, packed into arrays.

Each id is kept as its 63-bit hash (:func:`streams.core.state.event_id_hash`) with its event
time (whole epoch seconds, held as an unsigned 32-bit number: a time before 1970 counts as
1970, one after 2106 as 2106), in the order the ids were added; a sorted copy of the hashes
answers "seen before?" with a binary search. That is 20 bytes per id in memory, where a dict of
ints took about 95, and 12 bytes on the wire (two little-endian arrays, written as they are:
no per-id encoding; the map of format 2 took about 14). Which ids are kept is decided by the engine
(:meth:`SeenIds.prune`, see docs/scoring.md, "Redelivery").

Compiled with the engine (streams/core/native.py). Not thread-safe; no I/O.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from typing import Final

# The wire form is little-endian, whatever the machine's order.
_SWAP: Final = sys.byteorder != "little"
_MAX_TIME: Final = 2**32 - 1
if array("I").itemsize != 4:  # pragma: no cover - every platform CPython supports today
    raise ImportError("streams.core.seen_ids needs 4-byte unsigned ints (array typecode 'I')")


def _packed(values: array[int]) -> bytes:
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _unpacked(typecode: str, data: bytes) -> array[int]:
    values = array(typecode)
    if len(data) % values.itemsize:
        raise ValueError(f"seen ids: {len(data)} bytes is not a whole number of "
                         f"{values.itemsize}-byte values")
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values


def _time(t: int) -> int:
    """An event time as stored: clamped to what 32 unsigned bits hold."""
    return 0 if t < 0 else _MAX_TIME if t > _MAX_TIME else t


class SeenIds:
    """Hashes of applied event ids with their event times, oldest-added first."""

    __slots__ = ("_order", "_times", "_sorted")

    def __init__(self) -> None:
        self._order = array("q")  # hashes, in the order they were added
        self._times = array("I")  # the event time of each, same order
        self._sorted = array("q")  # the same hashes, sorted (for membership)

    @classmethod
    def from_pairs(cls, pairs: dict[int, int]) -> SeenIds:
        """From ``{hash: event time}`` in insertion order (format 1 and 2 states)."""
        seen = cls()
        seen._order = array("q", pairs.keys())
        seen._times = array("I", [_time(t) for t in pairs.values()])
        seen._sorted = array("q", sorted(seen._order))
        return seen

    @classmethod
    def from_wire(cls, hashes: bytes, times: bytes) -> SeenIds:
        """From :meth:`wire` output. ValueError if the two arrays do not pair up."""
        seen = cls()
        seen._order = _unpacked("q", hashes)
        seen._times = _unpacked("I", times)
        if len(seen._order) != len(seen._times):
            raise ValueError(f"seen ids: {len(seen._order)} hashes but "
                             f"{len(seen._times)} times")
        seen._sorted = array("q", sorted(seen._order))
        return seen

    def wire(self) -> tuple[bytes, bytes]:
        """The hashes (signed 64-bit) and their times (unsigned 32-bit), little-endian."""
        return _packed(self._order), _packed(self._times)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, h: int) -> bool:
        s = self._sorted
        i = bisect_left(s, h)
        return i < len(s) and s[i] == h

    def add(self, h: int, t: int) -> None:
        """Remember hash ``h`` applied at event time ``t`` (the caller checked it is new)."""
        self._order.append(h)
        self._times.append(_time(t))
        s = self._sorted
        s.insert(bisect_left(s, h), h)

    def prune(self, horizon: float, min_n: int, max_n: int) -> None:
        """Forget the oldest-added ids while more than ``min_n`` are kept and the oldest is
        before ``horizon`` or more than ``max_n`` are kept. Looks only at the front."""
        order, times = self._order, self._times
        n = len(order)
        drop = 0
        while n - drop > min_n:
            if times[drop] >= horizon and n - drop <= max_n:
                break
            drop += 1
        if drop:
            s = self._sorted
            for h in order[:drop]:
                del s[bisect_left(s, h)]
            del order[:drop]
            del times[:drop]

    def items(self) -> list[tuple[int, int]]:
        """``(hash, event time)`` pairs, oldest-added first."""
        return list(zip(self._order, self._times, strict=True))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SeenIds) and self._order == other._order
                and self._times == other._times)

    def __repr__(self) -> str:
        return f"SeenIds({len(self)} ids)"
