"""Identity stitching: which customer an event belongs to, and whether it must be re-keyed.

An event carrying both ``customer_id`` and ``anonymous_id`` links them; later events with only
that anonymous_id count for the customer. Pure: the caller passes the link lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.events import EventBase


@dataclass(frozen=True, slots=True)
class Route:
    customer_id: str
    """The id whose state the event updates (a customer id, or an unlinked anonymous id)."""
    forward: bool
    """True when the message key is not ``customer_id``: re-key it to reach that state."""
    link: tuple[str, str] | None
    """``(anonymous_id, customer_id)`` to remember, when the event links them."""


def route(
    event: EventBase, message_key: bytes | None, linked_customer: Callable[[str], str | None]
) -> Route:
    link = None
    if event.customer_id is not None:
        customer = event.customer_id
        if event.anonymous_id is not None and event.anonymous_id != customer:
            link = (event.anonymous_id, customer)
    else:
        anonymous = event.anonymous_id or ""
        customer = linked_customer(anonymous) or anonymous
    return Route(customer, message_key != customer.encode(), link)
