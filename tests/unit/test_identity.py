from __future__ import annotations

from schemas.events import touchpoint_adapter
from streams.core.identity import route


def _event(**ids: str | None) -> object:
    body = {
        "event_id": "e-1", "event_type": "page_view", "schema_version": 1,
        "occurred_at": "2026-11-23T10:15:00Z", "channel": "web", "properties": {"url": "/"},
        **{k: v for k, v in ids.items() if v is not None},
    }
    return touchpoint_adapter.validate_python(body)


def test_customer_event_keyed_by_customer_stays() -> None:
    decision = route(_event(customer_id="c-1"), b"c-1", lambda _: None)  # type: ignore[arg-type]
    assert (decision.customer_id, decision.forward, decision.link) == ("c-1", False, None)


def test_event_with_both_ids_links_them() -> None:
    decision = route(_event(customer_id="c-1", anonymous_id="a-9"), b"c-1",  # type: ignore[arg-type]
                     lambda _: None)
    assert decision.link == ("a-9", "c-1")
    assert not decision.forward


def test_linked_anonymous_event_is_forwarded_to_the_customer() -> None:
    links = {"a-9": "c-1"}
    decision = route(_event(anonymous_id="a-9"), b"a-9", links.get)  # type: ignore[arg-type]
    assert (decision.customer_id, decision.forward) == ("c-1", True)


def test_unlinked_anonymous_event_scores_under_its_anonymous_id() -> None:
    decision = route(_event(anonymous_id="a-9"), b"a-9", lambda _: None)  # type: ignore[arg-type]
    assert (decision.customer_id, decision.forward) == ("a-9", False)


def test_mis_keyed_message_is_forwarded() -> None:
    decision = route(_event(customer_id="c-1"), b"wrong", lambda _: None)  # type: ignore[arg-type]
    assert decision.forward and decision.customer_id == "c-1"
    assert route(_event(customer_id="c-1"), None, lambda _: None).forward  # type: ignore[arg-type]
