"""The packed redelivery guard (streams/core/seen_ids.py): the same ids as the dict it replaced."""

from __future__ import annotations

import random
import struct
import sys

import pytest

from streams.core.seen_ids import SeenIds, id_key
from streams.core.state import MAX_SEEN_IDS, MIN_SEEN_IDS, CustomerState, event_id_hash


def _reference_prune(seen: dict[int, int], horizon: float, min_n: int, max_n: int) -> None:
    """The dict version the engine used before (Engine._prune_seen)."""
    while len(seen) > min_n:
        oldest = next(iter(seen))
        if seen[oldest] >= horizon and len(seen) <= max_n:
            break
        del seen[oldest]


def test_membership_and_pruning_match_the_dict_it_replaced() -> None:
    rng = random.Random(3)
    packed, reference = SeenIds(), {}
    t = 1_700_000_000
    for i in range(5_000):
        t += rng.choice([0, 1, 5, 60, 900])
        h = event_id_hash(f"e-{rng.randrange(3_000)}")  # repeats: most ids come back
        assert (h in packed) == (h in reference)
        if h not in reference:
            at = t - rng.choice([0, 0, 30, 4_000])  # some arrive late, behind newer ones
            packed.add(h, at)
            reference[h] = at
        if len(reference) > MIN_SEEN_IDS:
            packed.prune(t - 3_600, MIN_SEEN_IDS, MAX_SEEN_IDS)
            _reference_prune(reference, t - 3_600, MIN_SEEN_IDS, MAX_SEEN_IDS)
        assert len(packed) == len(reference)
        if i % 500 == 0:
            assert packed.items() == list(reference.items())
            assert all(h in packed for h in reference)
    assert packed == SeenIds.from_pairs(reference)
    assert MIN_SEEN_IDS <= len(packed) <= MAX_SEEN_IDS


def test_the_wire_form_is_two_little_endian_arrays_and_reads_back() -> None:
    seen = SeenIds.from_pairs({(1 << 62) + 5: 1_700_000_000, 7: 2**40})
    seen.add(-3, -1)  # hashes are signed; a time before 1970 is kept as 1970
    hashes, times = seen.wire()
    assert hashes == struct.pack("<qqq", (1 << 62) + 5, 7, -3)
    assert times == struct.pack("<III", 1_700_000_000, 2**32 - 1, 0)
    back = SeenIds.from_wire(hashes, times)
    assert back == seen and back.items() == seen.items() and 7 in back and 8 not in back
    assert -3 in back and back.items()[2] == (-3, 0)
    by_key = SeenIds()  # the engine's path: the stored form computed once
    for h, t in back.items():
        assert not by_key.has_key(id_key(h))
        by_key.add_key(id_key(h), t)
    assert by_key == back and by_key.has_key(id_key(7))
    assert SeenIds.from_wire(b"", b"") == SeenIds() and len(SeenIds()) == 0
    for bad_hashes, bad_times in ((hashes[:-1], times), (hashes, times[:8]), (hashes, b"x")):
        with pytest.raises(ValueError, match="same count"):
            SeenIds.from_wire(bad_hashes, bad_times)


def test_an_id_is_found_only_at_a_value_boundary() -> None:
    # two stored hashes whose bytes, read across their boundary, spell a third one
    a, b = 0x1122334455667788, 0x0102030405060708
    seen = SeenIds.from_pairs({a: 1, b: 2})
    straddling = int.from_bytes(bytes(seen._hashes[4:12]), "little", signed=True)
    assert a in seen and b in seen and straddling not in seen
    seen.add(straddling, 3)  # once added, it is found at its own boundary
    assert straddling in seen and len(seen) == 3


def test_a_full_guard_is_small_in_memory_and_on_the_wire() -> None:
    pairs = {event_id_hash(f"e-{i}"): 1_700_000_000 + i for i in range(MAX_SEEN_IDS)}
    seen = SeenIds.from_pairs(pairs)
    hashes, times = seen.wire()
    assert len(hashes) + len(times) == 12 * MAX_SEEN_IDS
    as_dict = sys.getsizeof(pairs) + sum(sys.getsizeof(k) + sys.getsizeof(v)
                                         for k, v in pairs.items())
    packed = sys.getsizeof(seen._hashes) + sys.getsizeof(seen._times)
    assert packed <= 13 * MAX_SEEN_IDS < as_dict / 6, (packed, as_dict)


def test_states_with_either_form_of_ids_are_equal_and_write_the_packed_one() -> None:
    pairs = {11: 100, 3: 90}
    a, b = CustomerState(seen=pairs), CustomerState(seen=SeenIds.from_pairs(pairs))
    assert a == b and 3 in a.seen and a.seen.items() == [(11, 100), (3, 90)]
    assert CustomerState(seen=b.seen.wire()) == b
    back = CustomerState.from_bytes(a.to_bytes())
    assert back == a and isinstance(back.seen, SeenIds)
