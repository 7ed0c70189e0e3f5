"""Erase requests: the operator's order to forget one person, and the worker's confirmation.

An erase request travels on the worker's internal keyed topic (``<app id>.touchpoints.keyed``),
keyed by the id to erase and written to the partition
:func:`streams.partitioner.customer_partition` gives that id: the partition whose worker holds
the id's state, the same route a forwarded event takes. It is recognised by the
:data:`ERASE_HEADER` header (value: the contract version, ``b"1"``); the record's value is the
JSON of :class:`EraseRequest`. The header is honoured on the keyed topic only: a record on
``cx.touchpoints`` (which ``cx-publisher`` may write) never erases anything, and only a
principal that may write the worker's internal topics (the operator, with the worker's
credentials) can send one.

The worker confirms each request with a tombstone on the compacted scores topic (key: the
erased id, value: null) that carries :data:`ERASE_REQUEST_HEADER` (the request id) and
:data:`ERASE_RESULT_HEADER` (the JSON of :class:`EraseResult`). Neither holds personal data
beyond the record key, which is the id itself, as on every score record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ERASE_SCHEMA_VERSION = 1
ERASE_HEADER = "cx-erase"
ERASE_REQUEST_HEADER = "cx-erase-request"
ERASE_RESULT_HEADER = "cx-erase-result"


class EraseRequest(BaseModel):
    """Erase ``subject``: its state, its own identity link, the links to it that the worker
    holds in memory (learnt, not yet stored) and its latest score.

    The worker never looks for the stored links of a customer (that would scan the identity
    table): ``cxsignals erase`` finds the customer's anonymous ids itself and sends one request
    per id, ``kind`` ``anonymous``, each to that id's partition.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    request_id: str = Field(min_length=1, max_length=64)
    subject: str = Field(min_length=1, max_length=256)
    kind: Literal["customer", "anonymous"]
    requested_at: AwareDatetime

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json(cls, raw: bytes) -> EraseRequest:
        """Raises ``pydantic.ValidationError`` on anything but a valid version-1 request."""
        return cls.model_validate_json(raw)


class EraseResult(BaseModel):
    """What the worker removed for one subject (no personal data)."""

    model_config = ConfigDict(frozen=True)

    state_deleted: bool
    links_deleted: int = Field(ge=0)

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)
