"""The published alerts and score updates as the hot path builds, encodes and decodes them.

:mod:`schemas.alerts` and :mod:`schemas.scores` (pydantic) stay the contract and the source of the
JSON Schemas. Building a pydantic model costs 17-34k instructions, and the engine builds one per
alert, score update and explanation entry, so the engine and the sink use these slotted
dataclasses instead:

* ``to_json()`` (orjson) writes exactly the bytes that the pydantic model's ``model_dump_json``
  writes for the same values (same field order, float and datetime formatting, ``Z`` for UTC);
* :func:`decode_alert` and :func:`decode_score_update` (msgspec) read published JSON straight
  into the dataclasses; they accept and reject exactly what the pydantic models do.

tests/unit/test_published_json.py checks both directions against the pydantic models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from schemas.alerts import Alert, AlertKind
from schemas.events import JourneyStage
from schemas.scores import ScoreUpdate

_OPTIONS = orjson.OPT_UTC_Z  # pydantic writes UTC as "Z"
_dumps = orjson.dumps

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Score = Annotated[float, msgspec.Meta(ge=0, le=100)]
Risk = Annotated[float, msgspec.Meta(ge=0, le=1)]


@dataclass(slots=True)
class ContributionRecord:
    """``schemas.alerts.Contribution``: one signal's signed contribution in score points."""

    signal: str
    contribution: float
    event_id: str


@dataclass(slots=True, kw_only=True)
class AlertRecord:
    """``schemas.alerts.Alert``, field for field."""

    alert_id: str
    rule: str
    kind: AlertKind
    customer_id: str
    event_time: AwareDatetime
    emitted_at: AwareDatetime
    experience_score: Score
    churn_risk: Risk
    explanation: list[ContributionRecord] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    action: str
    context: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The published JSON (``Alert.model_dump_json()`` of the same values, as bytes)."""
        return _dumps(self, option=_OPTIONS)

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready dict without ``emitted_at``, as a deferred alert is kept in the state."""
        payload: dict[str, Any] = orjson.loads(_dumps(self, option=_OPTIONS))
        del payload["emitted_at"]
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], emitted_at: datetime) -> AlertRecord:
        """The alert of a :meth:`to_payload` dict, emitted at ``emitted_at``."""
        return msgspec.convert({**payload, "emitted_at": emitted_at}, cls)


@dataclass(slots=True, kw_only=True)
class ScoreUpdateRecord:
    """``schemas.scores.ScoreUpdate``, field for field."""

    customer_id: str
    experience_score: Score
    churn_risk: Risk
    journey_stage: JourneyStage
    previous_stage: JourneyStage | None = None
    explanation: list[ContributionRecord] = field(default_factory=list)
    event_time: AwareDatetime
    updated_at: AwareDatetime
    clv_12m: Annotated[float, msgspec.Meta(ge=0)] | None = None

    def to_json(self) -> bytes:
        """The published JSON (``ScoreUpdate.model_dump_json()`` of the same values, as bytes)."""
        return _dumps(self, option=_OPTIONS)


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
