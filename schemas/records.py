"""The published alerts and score updates as the hot path builds, encodes and decodes them.

:mod:`schemas.alerts` and :mod:`schemas.scores` (pydantic) stay the contract and the source of the
JSON Schemas. Building a pydantic model costs 17-34k instructions, and the engine builds one per
alert, score update and explanation entry, so the engine and the sink use these msgspec
Structs instead (a score update with five contributions: built in 1.3 us and written in 1.8 us;
as slotted dataclasses it took 4.2 us, interpreted ``__init__``, and 8.3 us, orjson's dataclass
path):

* ``to_json()`` writes exactly the bytes that the pydantic model's ``model_dump_json`` writes for
  the same values (same field order, float and datetime formatting, ``Z`` for UTC). It is orjson
  over ``msgspec.to_builtins``: msgspec's own JSON writes floats from 1e16 up as ``1e16`` where
  pydantic and orjson write ``1e+16``;
* :func:`decode_alert` and :func:`decode_score_update` (msgspec) read published JSON straight
  into the Structs; they accept and reject exactly what the pydantic models do.

tests/unit/test_published_json.py checks both directions against the pydantic models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from schemas.alerts import Alert, AlertKind
from schemas.events import JourneyStage
from schemas.scores import ScoreUpdate

# to_builtins writes datetimes as pydantic does (RFC 3339, "Z" for UTC); orjson then writes
# the floats as pydantic does.
_dumps = orjson.dumps
_to_builtins = msgspec.to_builtins

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Score = Annotated[float, msgspec.Meta(ge=0, le=100)]
Risk = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ContributionRecord(msgspec.Struct):
    """``schemas.alerts.Contribution``: one signal's signed contribution in score points."""

    signal: str
    contribution: float
    event_id: str


class AlertRecord(msgspec.Struct, kw_only=True):
    """``schemas.alerts.Alert``, field for field."""

    alert_id: str
    rule: str
    kind: AlertKind
    customer_id: str
    event_time: AwareDatetime
    emitted_at: AwareDatetime
    experience_score: Score
    churn_risk: Risk
    explanation: list[ContributionRecord] = msgspec.field(default_factory=list)
    evidence: list[str] = msgspec.field(default_factory=list)
    action: str
    context: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_json(self) -> bytes:
        """The published JSON (``Alert.model_dump_json()`` of the same values, as bytes)."""
        return _dumps(_to_builtins(self))

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready dict without ``emitted_at``, as a deferred alert is kept in the state."""
        payload: dict[str, Any] = _to_builtins(self)
        del payload["emitted_at"]
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], emitted_at: datetime) -> AlertRecord:
        """The alert of a :meth:`to_payload` dict, emitted at ``emitted_at``."""
        return msgspec.convert({**payload, "emitted_at": emitted_at}, cls)


class ScoreUpdateRecord(msgspec.Struct, kw_only=True):
    """``schemas.scores.ScoreUpdate``, field for field."""

    customer_id: str
    experience_score: Score
    churn_risk: Risk
    journey_stage: JourneyStage
    previous_stage: JourneyStage | None = None
    explanation: list[ContributionRecord] = msgspec.field(default_factory=list)
    event_time: AwareDatetime
    updated_at: AwareDatetime
    clv_12m: Annotated[float, msgspec.Meta(ge=0)] | None = None

    def to_json(self) -> bytes:
        """The published JSON (``ScoreUpdate.model_dump_json()`` of the same values, as bytes)."""
        return _dumps(_to_builtins(self))


_alert_decoder = msgspec.json.Decoder(AlertRecord)
_score_decoder = msgspec.json.Decoder(ScoreUpdateRecord)


def decode_alert(data: bytes) -> AlertRecord:
    """A published alert (a ``cx.alerts.*`` record value).

    Raises a ``ValueError`` (``pydantic.ValidationError``) for anything ``Alert`` rejects.
    msgspec reads the exact JSON types the producer writes; anything else (numbers as strings
    and the other lax-mode conversions of pydantic, or a failure) is left to the contract model.
    """
    try:
        return _alert_decoder.decode(data)
    except msgspec.DecodeError:
        model = Alert.model_validate_json(data)
    return msgspec.convert(model.model_dump(), AlertRecord)


def decode_score_update(data: bytes) -> ScoreUpdateRecord:
    """A published score update (a ``cx.scores`` record value); see :func:`decode_alert`."""
    try:
        return _score_decoder.decode(data)
    except msgspec.DecodeError:
        model = ScoreUpdate.model_validate_json(data)
    return msgspec.convert(model.model_dump(), ScoreUpdateRecord)
