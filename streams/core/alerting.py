"""From candidates to alerts: the policy's verdict, deferred and due alerts, and score updates.

:class:`Alerting` turns a rule's :class:`~streams.core.rule_evaluators.Candidate` into an emitted
alert, a deferred one (kept in the state until the quiet hours end) or a policy event; releases
cart deadlines and deferred alerts that are due; and builds the score update of a state. An
alert about to be sent whose id falls into its rule's ``control_share`` goes to
``Outcome.control_alerts`` instead (docs/alerts.md "Control groups"). Alert ids
are deterministic (:func:`~streams.core.alert_ids.alert_id`), ``now`` is used only for
``emitted_at``/``updated_at``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Final

from schemas.events import JourneyStage
from schemas.records import AlertRecord, ScoreUpdateRecord
from streams.core import policy
from streams.core.alert_ids import alert_id, in_control_group
from streams.core.engine_config import EngineConfig
from streams.core.explanation import Explainer
from streams.core.outcome import Outcome
from streams.core.policy import PolicyEvent
from streams.core.rounding import round_to
from streams.core.rule_config import CartRecoveryRule, RuleSet
from streams.core.rule_evaluators import Candidate, cart_candidate
from streams.core.state import MAX_DEFERRED, CustomerState
from streams.core.windows import timed_insert

MAX_EVIDENCE: Final = 10  # event ids per alert
_STAGE_BY_VALUE: Final = {stage._value_: stage for stage in JourneyStage}


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def _id_names(c: Candidate) -> list[str]:
    """What a candidate's alert id is made of after its rule and customer: its evidence, then
    its ``id_extra`` if any."""
    extra = c.id_extra
    return c.evidence if extra is None else [*c.evidence, extra]


def _id_names_when_read(c: Candidate) -> Callable[[], list[str]]:
    """:func:`_id_names` of a candidate with its evidence bounded, when called: a suppressed
    candidate's alert id is read rarely (the worker only counts them), and a candidate built
    when read (``Candidate``'s ``details``) is then built only if it is."""
    def names() -> list[str]:
        del c.evidence[:-MAX_EVIDENCE]
        return _id_names(c)
    return names


def _alert_id(c: Candidate, customer_id: str) -> str:
    return alert_id(c.rule, customer_id, _id_names(c))


class Alerting:
    """Alert decisions and score updates for one customer at a time (no I/O)."""

    __slots__ = ("_policy", "_cooldown_s", "_cart_rule", "_half_life_s", "_top", "_control_share")

    def __init__(
        self, config: EngineConfig, rules: RuleSet, cart_rule: CartRecoveryRule | None
    ) -> None:
        self._policy = rules.policy
        self._cooldown_s = {rule_id: rules.cooldown_s(rule_id) for rule_id in rules.enabled}
        self._control_share = {
            rule_id: share
            for rule_id in rules.enabled
            if (share := rules.control_share(rule_id)) > 0.0
        }
        self._cart_rule = cart_rule
        self._half_life_s = config.half_life_s
        self._top = config.explanation_top

    def explainer(self, st: CustomerState) -> Explainer:
        """The explanation of ``st`` as it is now, computed on first use."""
        return Explainer(st, self._half_life_s, self._top)

    def decide(
        self,
        st: CustomerState,
        customer_id: str,
        c: Candidate,
        now: datetime,
        out: Outcome,
        explain: Explainer,
    ) -> None:
        d = policy.decide(
            st, c.rule, c.kind, c.event_time, self._cooldown_s.get(c.rule, 0.0), self._policy
        )
        if d.action == "suppressed":
            # Most candidates end here (cooldowns): the worker only counts their policy events,
            # whose alert id and event time are computed if read (and a candidate built when
            # read, its evidence too).
            assert d.reason is not None
            out.policy_events.append(
                PolicyEvent(
                    c.rule,
                    c.kind,
                    d.reason,
                    "suppressed",
                    None,
                    None,
                    customer_id,
                    _id_names_when_read(c),
                    c.event_time,
                )
            )
            return
        # Bounded evidence keeps alerts and deferred state small; the latest events are kept.
        del c.evidence[:-MAX_EVIDENCE]
        policy.record(st, c.rule, c.kind, c.event_time)
        alert = AlertRecord(
            alert_id=_alert_id(c, customer_id),
            rule=c.rule,
            kind=c.kind,
            customer_id=customer_id,
            event_time=_dt(c.event_time),
            emitted_at=now,
            experience_score=round_to(st.score, 2),
            churn_risk=round_to(st.risk, 4),
            explanation=explain(),
            evidence=c.evidence,
            action=c.action,
            context=c.context,
        )
        if d.action == "emit":
            self._send(alert, out)
            return
        assert d.release_t is not None
        out.policy_events.append(
            PolicyEvent(c.rule, c.kind, "quiet_hours", "deferred", alert.alert_id, alert.event_time)
        )
        timed_insert(st.deferred, (d.release_t, alert.to_payload()), MAX_DEFERRED)

    def release(
        self,
        st: CustomerState,
        customer_id: str,
        upto: float,
        inclusive: bool,
        now: datetime,
        out: Outcome,
        explain: Explainer | None = None,
    ) -> None:
        """Fire cart deadlines and release deferred alerts that are due by event time ``upto``.

        ``explain``: the explanation of the current state when the caller already has one.
        """

        def due(x: float) -> bool:
            return x <= upto if inclusive else x < upto

        if st.pending_carts and due(st.pending_carts[0][0]):
            ready = [c for c in st.pending_carts if due(c[0])]
            st.pending_carts = [c for c in st.pending_carts if not due(c[0])]
            if self._cart_rule is not None:
                if explain is None:
                    explain = self.explainer(st)
                for cart in ready:
                    cand = cart_candidate(cart, self._cart_rule)
                    self.decide(st, customer_id, cand, now, out, explain)
        if st.deferred and due(st.deferred[0][0]):
            ready_d = [d for d in st.deferred if due(d[0])]
            st.deferred = [d for d in st.deferred if not due(d[0])]
            for release_t, payload in ready_d:
                alert = AlertRecord.from_payload(payload, now)
                # The customer may have turned angry during the quiet hours: re-check on release.
                if policy.suppressed_by_support(st, release_t, self._policy):
                    out.policy_events.append(
                        PolicyEvent(
                            alert.rule,
                            alert.kind,
                            "suppression",
                            "suppressed",
                            alert.alert_id,
                            alert.event_time,
                        )
                    )
                else:
                    self._send(alert, out)

    def _send(self, alert: AlertRecord, out: Outcome) -> None:
        """Send ``alert``, or withhold it as a control alert when its id falls into its rule's
        control share (decided at sending time, after the policy, on the deterministic id: a
        replay puts it in the same group, and the policy counted it as sent either way)."""
        share = self._control_share.get(alert.rule)
        if share is not None and in_control_group(alert.alert_id, share):
            out.control_alerts.append(alert)
        else:
            out.alerts.append(alert)

    def score_update(
        self,
        st: CustomerState,
        customer_id: str,
        now: datetime,
        explain: Explainer | None,
        at_s: float | None = None,
        clv_12m: float | None = None,
    ) -> ScoreUpdateRecord:
        """The score update of the state as it is now (the engine decides when to publish).
        ``event_time`` is the watermark, or ``at_s`` for an idle customer's risk evaluated
        later (the time the risk is as of)."""
        stage = st.stage
        assert stage is not None and st.watermark is not None
        previous = st.pub_stage if st.pub_stage != stage else None
        st.pub_score, st.pub_risk, st.pub_stage = st.score, st.risk, stage
        if explain is None:
            explain = self.explainer(st)
        return ScoreUpdateRecord(
            customer_id=customer_id,
            experience_score=round_to(st.score, 2),
            churn_risk=round_to(st.risk, 4),
            journey_stage=_STAGE_BY_VALUE[stage],
            previous_stage=None if previous is None else _STAGE_BY_VALUE[previous],
            explanation=explain(),
            event_time=_dt(st.watermark if at_s is None else at_s),
            updated_at=now,
            clv_12m=None if clv_12m is None else round_to(clv_12m, 2),
        )
