"""The packed support contacts and errors (streams/core/contact_log.py, error_log.py): the same
records and the same answers as the timed lists of records they replaced
(streams/core/windows.py), and a wire form that reads back."""

from __future__ import annotations

import random
from typing import Any

import pytest

from streams.core.contact_log import ContactLog
from streams.core.error_log import ErrorLog
from streams.core.state import MAX_CONTACTS, MAX_ERRORS, CustomerState
from streams.core.windows import DAY_S, timed_between, timed_insert, timed_prune


def _open_since(records: list[Any], since_t: float) -> int:
    """What the churn scorer counted from the records before."""
    return sum(1 for c in records if c[0] >= since_t and not c[1])


def test_contacts_match_the_timed_list_they_replaced() -> None:
    rng = random.Random(11)
    packed, reference = ContactLog(), list[Any]()
    t = 1_700_000_000.0
    seen_open = seen_window = longest = 0
    for i in range(20_000):
        t += rng.choice([0.0, 5.0, 600.0, 3_600.0, 20_000.0])
        at = t - rng.choice([0.0, 0.0, 0.0, 60.0, 3_000.0])  # some late, behind newer ones
        record = (at, rng.random() < 0.4, f"e-{i}", f"c-{i % 97}", rng.choice("abc"))
        packed.insert(*record, MAX_CONTACTS)
        timed_insert(reference, record, MAX_CONTACTS)
        if i % 5 == 0:
            packed.prune(t - 7 * DAY_S)
            timed_prune(reference, t - 7 * DAY_S)
        lo_t = t - rng.choice([600.0, DAY_S, 3 * DAY_S])
        hi_t = t - rng.choice([0.0, 0.0, 100.0])
        window = timed_between(reference, lo_t, hi_t)
        assert packed.between(lo_t, hi_t) == window
        assert packed.any_between(lo_t, hi_t) == bool(window)
        assert packed.open_since(lo_t) == _open_since(reference, lo_t)
        assert packed.records() == reference
        assert bool(packed) == bool(reference) and len(packed) == len(reference)
        seen_open += packed.open_since(lo_t) > 0
        seen_window += len(window) > 1
        longest = max(longest, len(packed))
    assert seen_open > 1_000 and seen_window > 1_000  # both answers were compared non-empty
    assert longest == MAX_CONTACTS  # and the cap bit


def test_errors_match_the_timed_list_they_replaced() -> None:
    rng = random.Random(12)
    packed, reference = ErrorLog(), list[Any]()
    t = 1_700_000_000.0
    seen_window = longest = 0
    for i in range(20_000):
        t += rng.choice([0.0, 1.0, 30.0, 600.0])
        at = t - rng.choice([0.0, 0.0, 0.0, 5.0, 900.0])
        record = (at, f"e-{i}", rng.choice(["error_page", "app_error", "payment_failed"]))
        packed.insert(*record, MAX_ERRORS)
        timed_insert(reference, record, MAX_ERRORS)
        if i % 3 == 0:
            packed.prune(t - 10_800)
            timed_prune(reference, t - 10_800)
        lo_t, hi_t = t - rng.choice([300.0, 1_800.0]), t + rng.choice([0.0, 300.0, -60.0])
        window = timed_between(reference, lo_t, hi_t)
        assert packed.between(lo_t, hi_t) == window
        assert packed.records() == reference
        seen_window += len(window) > 2
        longest = max(longest, len(packed))
    assert seen_window > 1_000
    assert longest == MAX_ERRORS


def test_equal_times_keep_the_order_of_arrival() -> None:
    errors = ErrorLog()
    for event_id, t in (("a", 10.0), ("b", 20.0), ("c", 10.0), ("d", 5.0)):
        errors.insert(t, event_id, "app_error", MAX_ERRORS)
    assert [r[1] for r in errors.records()] == ["d", "a", "c", "b"]
    assert [r[1] for r in errors.between(10.0, 10.0)] == ["a", "c"]
    assert errors.between(11.0, 19.0) == [] and ErrorLog().between(0.0, 30.0) == []
    contacts = ContactLog()
    for event_id, t in (("a", 10.0), ("b", 20.0), ("c", 10.0)):
        contacts.insert(t, event_id == "c", event_id, "k", "r", MAX_CONTACTS)
    assert [(r[1], r[2]) for r in contacts.records()] == [(False, "a"), (True, "c"),
                                                          (False, "b")]
    assert contacts.open_since(10.0) == 2 and contacts.open_since(10.5) == 1
    assert not contacts.any_between(11.0, 19.0) and not ContactLog().any_between(0.0, 1.0)


def test_the_wire_form_reads_back_and_a_torn_one_is_refused() -> None:
    contacts, errors = ContactLog(), ErrorLog()
    for i in range(5):
        contacts.insert(100.0 + i, i % 2 == 0, f"e{i}", f"c{i}", "billing", MAX_CONTACTS)
        errors.insert(100.0 + i, f"x{i}", "app_error", MAX_ERRORS)
    assert ContactLog.from_wire(*contacts.wire()) == contacts
    assert ErrorLog.from_wire(*errors.wire()) == errors
    state = CustomerState(contacts=contacts, errors=errors)
    back = CustomerState.from_bytes(state.to_bytes())
    assert back.contacts == contacts and back.errors == errors
    assert back.contacts.records() == contacts.records()
    times, resolved, ids, contact_ids, reasons = contacts.wire()
    with pytest.raises(ValueError, match="contacts"):
        ContactLog.from_wire(times, resolved[:-1], ids, contact_ids, reasons)
    with pytest.raises(ValueError, match="errors"):
        ErrorLog.from_wire(errors.wire()[0][:-8], *errors.wire()[1:])
    assert contacts != errors and repr(contacts) == "ContactLog(5 contacts)"
