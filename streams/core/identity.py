"""Identity stitching: which customer an event belongs to, and which link it teaches.

An event carrying both ``customer_id`` and ``anonymous_id`` links them; later events with only
that anonymous_id count for the customer. Where the event is scored is not decided here: the
pipeline scores it on the partition the project's partitioner gives the customer (see
:mod:`streams.partitioner`). Pure: the caller passes the link lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Link = tuple[str, str]
"""``(anonymous_id, customer_id)``: a link to remember."""


def resolve(event: Any, linked_customer: Callable[[str], str | None]) -> tuple[str, Link | None]:
    """The id whose state the event updates (a customer id, or an unlinked anonymous id), and
    the link the event teaches, if any. A plain tuple: this runs once per event."""
    customer = event.customer_id
    if customer is not None:
        anonymous = event.anonymous_id
        if anonymous is not None and anonymous != customer:
            return customer, (anonymous, customer)
        return customer, None
    anonymous = event.anonymous_id or ""
    return linked_customer(anonymous) or anonymous, None
