"""What the engine returns for one event or timer tick."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import AlertRecord, ScoreUpdateRecord
from streams.core.policy import PolicyEvent
from streams.core.state import CustomerState


@dataclass(slots=True)
class Outcome:
    """The customer's state after the event (mutated in place: persist it before committing the
    event's offset), what to publish (``alerts`` and ``score_update``, each with ``to_json()``),
    and the policy's suppressions and deferrals (for metrics)."""

    state: CustomerState
    duplicate: bool = False
    late_dropped: bool = False  # older than watermark - grace_s: nothing changed
    score_update: ScoreUpdateRecord | None = None
    alerts: list[AlertRecord] = field(default_factory=list)
    # Alerts that passed the policy but fell into their rule's control group: recorded (sink),
    # never sent to the alert topics. The policy counted them as sent.
    control_alerts: list[AlertRecord] = field(default_factory=list)
    policy_events: list[PolicyEvent] = field(default_factory=list)
