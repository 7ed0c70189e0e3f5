from __future__ import annotations

from schemas.events import touchpoint_adapter
from streams.core.identity import resolve


def _event(**ids: str | None) -> object:
    body = {
        "event_id": "e-1", "event_type": "page_view", "schema_version": 1,
        "occurred_at": "2026-11-23T10:15:00Z", "channel": "web", "properties": {"url": "/"},
        **{k: v for k, v in ids.items() if v is not None},
    }
    return touchpoint_adapter.validate_python(body)


def test_a_customer_event_belongs_to_its_customer() -> None:
    assert resolve(_event(customer_id="c-1"), lambda _: None) == ("c-1", None)


def test_an_event_with_both_ids_links_them() -> None:
    assert resolve(_event(customer_id="c-1", anonymous_id="a-9"), lambda _: None) == (
        "c-1", ("a-9", "c-1"))
    assert resolve(_event(customer_id="c-1", anonymous_id="c-1"), lambda _: None) == (
        "c-1", None)


def test_a_linked_anonymous_event_belongs_to_the_customer() -> None:
    links = {"a-9": "c-1"}
    assert resolve(_event(anonymous_id="a-9"), links.get) == ("c-1", None)


def test_an_unlinked_anonymous_event_scores_under_its_anonymous_id() -> None:
    assert resolve(_event(anonymous_id="a-9"), lambda _: None) == ("a-9", None)
