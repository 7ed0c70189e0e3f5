"""What the engine returns for one event or timer tick."""

from __future__ import annotations

from schemas.records import AlertRecord, ScoreUpdateRecord
from streams.core.policy import PolicyEvent
from streams.core.state import CustomerState


class Outcome:
    """The customer's state after the event (mutated in place: persist it before committing the
    event's offset), what to publish (``alerts`` and ``score_update``, each with ``to_json()``),
    and the policy's suppressions and deferrals (for metrics).

    A plain class rather than a dataclass: one is built per event, and a compiled dataclass
    still runs the interpreted ``__init__`` that ``dataclasses`` generates."""

    __slots__ = ("state", "duplicate", "late_dropped", "score_update", "alerts",
                 "control_alerts", "policy_events")

    def __init__(
        self,
        state: CustomerState,
        duplicate: bool = False,
        late_dropped: bool = False,  # older than watermark - grace_s: nothing changed
        score_update: ScoreUpdateRecord | None = None,
        alerts: list[AlertRecord] | None = None,
        control_alerts: list[AlertRecord] | None = None,
        policy_events: list[PolicyEvent] | None = None,
    ) -> None:
        self.state = state
        self.duplicate = duplicate
        self.late_dropped = late_dropped
        self.score_update = score_update
        self.alerts = [] if alerts is None else alerts
        # Alerts that passed the policy but fell into their rule's control group: recorded
        # (sink), never sent to the alert topics. The policy counted them as sent.
        self.control_alerts = [] if control_alerts is None else control_alerts
        self.policy_events = [] if policy_events is None else policy_events

    def __repr__(self) -> str:
        return (f"Outcome(duplicate={self.duplicate}, late_dropped={self.late_dropped}, "
                f"alerts={self.alerts!r}, score_update={self.score_update!r})")
