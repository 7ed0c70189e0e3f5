"""The strongest signals a customer state keeps for its explanations, packed in columns.

Each kept signal is its event time, its weight in score points, its name and the id of the event
that carried it: the times and weights as two arrays of doubles, the names and ids as two lists.
As ``(time, weight, name, id)`` tuples a full list (:data:`streams.core.state.MAX_SIGNALS`) was
about a hundred objects spread over the heap as the events came, encoded on every checkpoint
and read on every score update; packed, it is the strings plus four containers, and the wire
form is the two arrays' bytes as they are (little-endian doubles) plus the two lists.

Which signals are kept: the list keeps the ``cap`` signals with the largest decayed size.
Ranking by ``log2|w| + t / half_life`` equals ranking by decayed size at any reference time, so
what is kept does not depend on when the list was trimmed. Once the list is full it is held in
rank order (a stable sort: equal ranks keep their order), and the ranks are remembered (not
stored) so that a new signal is placed with one search instead of ranking every kept one again.

Compiled with the engine (streams/core/native.py). Not thread-safe; no I/O.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Final

from streams.core.packed_arrays import extend_le, le_bytes
from streams.core.state_wire import SignalRec

if array("d").itemsize != 8:  # pragma: no cover - every platform CPython supports today
    raise ImportError("streams.core.kept_signals needs 8-byte doubles")
# How far (in log2 units) a rank may be from the log2 of a decayed size computed another way:
# both are a few float roundings of values below ~2**11 (event times over half-lives), so
# ~1e-12 at most; 1e-9 leaves a wide margin and still selects only near-equal ranks.
RANK_SLACK: Final = 1e-9


def signal_rank(t: float, weight: float, half_life_s: float) -> float:
    """A signal's place in the kept list: larger decayed size, higher rank."""
    return math.log2(abs(weight) or 1e-12) + t / half_life_s


class KeptSignals:
    """Signals as columns: event times, weights, names, event ids (list order, see above)."""

    __slots__ = ("_ids", "_names", "_ranks", "_ranks_half_life_s", "_times", "_weights")

    def __init__(self) -> None:
        self._times = array("d")
        self._weights = array("d")
        self._names: list[str] = []
        self._ids: list[str] = []
        # The rank of each signal while the list is in rank order (None: not known, e.g. after
        # an append that did not trim, or in a decoded state), and the half-life of those ranks.
        self._ranks: array[float] | None = None
        self._ranks_half_life_s = 0.0

    @classmethod
    def from_records(cls, records: list[SignalRec]) -> KeptSignals:
        """From ``(time, weight, name, event id)`` records (formats 1-3, tests)."""
        kept = cls()
        kept._times = array("d", [r[0] for r in records])
        kept._weights = array("d", [r[1] for r in records])
        kept._names = [r[2] for r in records]
        kept._ids = [r[3] for r in records]
        return kept

    @classmethod
    def from_wire(cls, times: bytes, weights: bytes, names: list[str],
                  ids: list[str]) -> KeptSignals:
        """From :meth:`wire` output. ValueError if the four do not pair up."""
        if (len(times) % 8 or len(weights) != len(times)
                or not len(times) // 8 == len(names) == len(ids)):
            raise ValueError(f"kept signals: {len(times)} bytes of times, {len(weights)} of "
                             f"weights, {len(names)} names and {len(ids)} ids are not one "
                             "signal each")
        kept = cls()
        extend_le(kept._times, times)
        extend_le(kept._weights, weights)
        kept._names = names
        kept._ids = ids
        return kept

    def wire(self) -> tuple[bytes, bytes, list[str], list[str]]:
        """Times and weights (little-endian doubles), then the names and the ids (the state's
        own lists)."""
        return le_bytes(self._times), le_bytes(self._weights), self._names, self._ids

    def records(self) -> list[SignalRec]:
        """Every signal as ``(time, weight, name, event id)``, in list order (a copy)."""
        return list(zip(self._times, self._weights, self._names, self._ids, strict=True))

    def columns(self) -> tuple[array[float], array[float], list[str], list[str]]:
        """The four columns themselves, in list order (read them, do not change them)."""
        return self._times, self._weights, self._names, self._ids

    @property
    def ranks_remembered(self) -> bool:
        """Whether the next trim places new signals by search (introspection, for tests)."""
        return self._ranks is not None

    def __len__(self) -> int:
        return len(self._ids)

    def strongest(self, top: int, half_life_s: float) -> range:
        """Positions that may hold the ``top`` signals of largest decayed size: all of them,
        unless the list is in rank order with its ranks known for ``half_life_s``; then the
        ``top`` highest ranks and any rank within :data:`RANK_SLACK` below the lowest of them
        (a signal ranked lower is smaller than ``top`` others whatever the rounding)."""
        n = len(self._ids)
        ranks = self._ranks
        if (ranks is None or top <= 0 or n <= top or self._ranks_half_life_s != half_life_s
                or len(ranks) != n):
            return range(n)
        return range(bisect_left(ranks, ranks[n - top] - RANK_SLACK), n)

    def add(self, t: float, event_id: str, signals: Sequence[tuple[str, float]], cap: int,
            half_life_s: float) -> None:
        """Append an event's signals; beyond ``cap`` keep the strongest (see the module)."""
        times, weights, names, ids = self._times, self._weights, self._names, self._ids
        ranks = self._ranks
        if ranks is not None and (self._ranks_half_life_s != half_life_s
                                  or len(ranks) != len(ids)):
            ranks = None  # ranked with another half-life: rank again
        for name, weight in signals:
            times.append(t)
            weights.append(weight)
            names.append(name)
            ids.append(event_id)
        excess = len(ids) - cap
        if excess <= 0:
            self._ranks = None  # appended, not sorted
            return
        if ranks is None:  # a stable sort of the indices by rank: each rank computed once
            all_ranks = [signal_rank(times[i], weights[i], half_life_s) for i in range(len(ids))]
            order = sorted(range(len(all_ranks)), key=all_ranks.__getitem__)
            self._times = times = array("d", [times[i] for i in order])
            self._weights = weights = array("d", [weights[i] for i in order])
            self._names = names = [names[i] for i in order]
            self._ids = ids = [ids[i] for i in order]
            ranks = array("d", [all_ranks[i] for i in order])
        else:
            # In rank order with the ranks known: place each new signal after the equal ranks
            # (bisect_right), in order, as the stable sort above would.
            for j in range(len(ranks), len(ids)):
                nt, nw, nn, ni = times[j], weights[j], names[j], ids[j]
                rank = signal_rank(nt, nw, half_life_s)
                at = bisect_right(ranks, rank)
                if at < j:  # else it is in place already: after every kept rank
                    del times[j], weights[j], names[j], ids[j]
                    times.insert(at, nt)
                    weights.insert(at, nw)
                    names.insert(at, nn)
                    ids.insert(at, ni)
                ranks.insert(at, rank)
        del times[:excess], weights[:excess], names[:excess], ids[:excess], ranks[:excess]
        self._ranks = ranks
        self._ranks_half_life_s = half_life_s

    def copy(self) -> KeptSignals:
        """An independent copy of the columns (the ranks are not copied: recomputed if needed)."""
        kept = KeptSignals()
        kept._times = self._times[:]
        kept._weights = self._weights[:]
        kept._names = self._names[:]
        kept._ids = self._ids[:]
        return kept

    def negatives(self, since_t: float) -> list[tuple[float, str]]:
        """``(time, event id)`` of the negative signals at or after ``since_t``, list order."""
        times, weights, ids = self._times, self._weights, self._ids
        return [(times[i], ids[i]) for i in range(len(ids))
                if weights[i] < 0 and times[i] >= since_t]

    def negative_ids(self) -> list[str]:
        """Event ids of every negative signal, in list order."""
        weights, ids = self._weights, self._ids
        return [ids[i] for i in range(len(ids)) if weights[i] < 0]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, KeptSignals) and self._times == other._times
                and self._weights == other._weights and self._names == other._names
                and self._ids == other._ids)

    def __repr__(self) -> str:
        return f"KeptSignals({len(self)} signals)"
