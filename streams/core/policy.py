"""Alert policy: cooldown, daily cap, quiet hours and suppression, in event time.

Order of checks for a new candidate (the first that applies wins):
1. suppression (marketing only): an open support alert (a support alert within
   ``open_support_alert_s`` before the alert's event time) or a detractor-like answer within
   ``negative_answer_s`` -> suppressed. "Never sell to an angry customer."
2. cooldown: the same rule alerted this customer less than ``cooldown_s`` ago (either side
   in event time, so late events obey it too) -> suppressed.
3. daily cap: the customer already got ``daily_cap[kind]`` alerts of this kind on that UTC day
   of event time -> suppressed.
4. quiet hours (marketing only): the alert's event time falls in the customer's local quiet
   hours -> deferred in the state until they end (not dropped), then re-checked for
   suppression only when released.
An alert that passes is *recorded* (cooldown, cap, open support alert) when emitted or deferred.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.alerts import AlertKind
from streams.core.alert_ids import alert_id
from streams.core.rule_config import PolicyConfig, QuietHours
from streams.core.state import CustomerState
from streams.core.windows import DAY_S

Reason = Literal["cooldown", "cap", "quiet_hours", "suppression"]
PolicyAction = Literal["suppressed", "deferred"]


class PolicyEvent:
    """One suppression or deferral, for the ``cx_alerts_policy_total{reason,action}`` metric.

    Read-only by convention (a plain class: see ``churn.PurchaseHistory``). The worker only
    counts these, and about one event in four builds a candidate that the policy suppresses: a
    suppressed candidate's alert id and event time are computed when first read (the id's
    SHA-1 and the datetime cost ~1.3 us a candidate).
    """

    __slots__ = ("rule", "kind", "reason", "action", "_alert_id", "_event_time",
                 "_customer_id", "_evidence", "_t")

    def __init__(self, rule: str, kind: AlertKind, reason: Reason, action: PolicyAction,
                 alert_id: str | None, event_time: datetime | None, customer_id: str = "",
                 evidence: list[str] | Callable[[], list[str]] | None = None,
                 t: float = 0.0) -> None:
        """``alert_id`` and ``event_time`` as known, or None: then they are computed when
        first read, as ``alert_id(rule, customer_id, evidence)`` (the caller hands
        ``evidence`` over and does not change it; or a function that returns it, called then)
        and the UTC datetime of epoch seconds ``t``."""
        self.rule = rule
        self.kind = kind
        self.reason = reason
        self.action = action
        self._alert_id = alert_id
        self._event_time = event_time
        self._customer_id = customer_id
        self._evidence = evidence
        self._t = t

    @property
    def alert_id(self) -> str:
        """The id the alert would have had (deterministic: a replay gives the same)."""
        value = self._alert_id
        if value is None:
            evidence = self._evidence
            if evidence is not None and not isinstance(evidence, list):
                evidence = evidence()
            value = alert_id(self.rule, self._customer_id, evidence or [])
            self._alert_id = value
        return value

    @property
    def event_time(self) -> datetime:
        value = self._event_time
        if value is None:
            value = datetime.fromtimestamp(self._t, timezone.utc)
            self._event_time = value
        return value

    def __repr__(self) -> str:
        return (f"PolicyEvent({self.rule!r}, {self.kind!r}, {self.reason!r}, {self.action!r}, "
                f"{self.alert_id!r}, {self.event_time!r})")


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["emit", "suppressed", "deferred"]
    reason: Reason | None = None
    release_t: float | None = None  # for deferred: when quiet hours end (epoch s)


@lru_cache(maxsize=1024)
def zone(name: str | None) -> tzinfo:
    """The IANA zone ``name``; UTC when absent or unknown (never raises)."""
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


@lru_cache(maxsize=1024)
def is_valid_zone(name: str) -> bool:
    """Whether ``name`` is a known IANA zone (cached: it is asked on every in-order event)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def quiet_release(t: float, tz: tzinfo, qh: QuietHours) -> float | None:
    """End of the quiet hours containing event time ``t`` (epoch s), or None if not quiet."""
    local = datetime.fromtimestamp(t, tz)
    now = local.time().replace(tzinfo=None)
    day = local.date()
    if qh.start > qh.end:  # wraps midnight, e.g. 21:00-08:00
        if now >= qh.start:
            end_day = day + timedelta(days=1)
        elif now < qh.end:
            end_day = day
        else:
            return None
    elif qh.start <= now < qh.end:
        end_day = day
    else:
        return None
    return datetime.combine(end_day, qh.end, tzinfo=tz).timestamp()


def suppressed_by_support(st: CustomerState, t: float, cfg: PolicyConfig) -> bool:
    """Open support alert or recent detractor-like answer at event time ``t``."""
    sa = st.last_support_alert
    if sa is not None and sa <= t and t - sa <= cfg.open_support_alert_s:
        return True
    neg = st.last_negative
    return neg is not None and neg <= t and t - neg <= cfg.negative_answer_s


def _cap_key(kind: AlertKind, t: float) -> str:
    return f"{kind._value_}:{int(t // DAY_S)}"  # _value_: Enum.value is a slow property


# Shared results (Decision is frozen): decide() runs for every candidate alert.
_EMIT: Final = Decision("emit")
_BY_SUPPORT: Final = Decision("suppressed", "suppression")
_BY_COOLDOWN: Final = Decision("suppressed", "cooldown")
_BY_CAP: Final = Decision("suppressed", "cap")


def decide(
    st: CustomerState, rule: str, kind: AlertKind, t: float, cooldown_s: float, cfg: PolicyConfig
) -> Decision:
    """Apply the policy to a new candidate alert (see the module docstring for the order)."""
    marketing = kind is AlertKind.marketing
    if marketing and suppressed_by_support(st, t, cfg):
        return _BY_SUPPORT
    last = st.last_fired.get(rule)
    if last is not None and abs(t - last) < cooldown_s:
        return _BY_COOLDOWN
    cap = cfg.daily_cap.get(kind)
    if cap is not None and st.daily_counts.get(_cap_key(kind, t), 0) >= cap:
        return _BY_CAP
    if marketing and cfg.quiet_hours is not None:
        release = quiet_release(t, zone(st.timezone), cfg.quiet_hours)
        if release is not None:
            return Decision("deferred", "quiet_hours", release)
    return _EMIT


def record(st: CustomerState, rule: str, kind: AlertKind, t: float) -> None:
    """Count an emitted or deferred alert for cooldown, cap and open-support suppression."""
    st.last_fired[rule] = max(t, st.last_fired.get(rule, t))
    key = _cap_key(kind, t)
    st.daily_counts[key] = st.daily_counts.get(key, 0) + 1
    if kind is AlertKind.support and (st.last_support_alert is None or t > st.last_support_alert):
        st.last_support_alert = t


def prune_counts(st: CustomerState, now_t: float) -> None:
    """Forget cap counters older than yesterday (late events reach back at most the grace)."""
    oldest = int(now_t // DAY_S) - 1
    for key in [k for k in st.daily_counts if int(k.rsplit(":", 1)[1]) < oldest]:
        del st.daily_counts[key]
