"""The rules file: its validated models and how it is loaded.

The rules file (JSON, shipped as ``streams/core/default_rules.json``; another path via
``CX_RULES_PATH``) lists rules by stable id with ``kind``, ``enabled``, ``cooldown_s``,
``control_share`` (optional) and ``params``, plus the alert ``policy``. A rule that the file
does not list does not run.
:func:`load_rules` raises :class:`RulesError` naming the rule and field of the first problems.
docs/scoring.md describes every rule in words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.alerts import AlertKind
from streams.core.windows import DAY_S, HOUR_S

DEFAULT_RULES_PATH = Path(__file__).with_name("default_rules.json")


class RulesError(ValueError):
    """The rules file is missing, not JSON, or does not validate; the message says where."""


# ---------------------------------------------------------------- configuration models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CartRecoveryParams(_Strict):
    min_cart_value: float = Field(20.0, ge=0)
    wait_minutes: float = Field(30.0, gt=0, le=24 * 60)


class BrowseIntentParams(_Strict):
    min_views: int = Field(3, ge=2)
    window_minutes: float = Field(60.0, gt=0, le=24 * 60)


class WinBackParams(_Strict):
    min_churn_risk: float = Field(0.6, gt=0, le=1)
    min_experience_score: float = Field(40.0, ge=0, le=100)
    min_purchases: int = Field(2, ge=0)


class PromoterReferralParams(_Strict):
    min_nps: int = Field(9, ge=0, le=10)
    purchase_within_days: float = Field(30.0, gt=0)


class DetractorFollowUpParams(_Strict):
    max_nps: int = Field(6, ge=0, le=10)
    max_csat: int = Field(2, ge=1, le=5)
    max_ces: int = Field(2, ge=1, le=7)
    max_sentiment: float = Field(-0.5, ge=-1, le=1)


class RepeatContactParams(_Strict):
    min_contacts: int = Field(2, ge=2)
    window_hours: float = Field(24.0, gt=0, le=7 * 24)


class FrictionSpikeParams(_Strict):
    min_errors: int = Field(3, ge=1)
    window_minutes: float = Field(60.0, gt=0, le=24 * 60)


class ExperienceDropParams(_Strict):
    min_drop_points: float = Field(20.0, gt=0, le=100)
    # The hourly score buckets cover 24 h, so a longer window cannot be honoured.
    window_hours: int = Field(24, ge=1, le=24)


class HighValueAtRiskParams(_Strict):
    # Expected (discounted) spend over the next 12 months, the CLV of the churn model.
    min_clv_12m: float = Field(200.0, ge=0)
    min_spend: float = Field(0.0, ge=0)  # optional floor on the lifetime spend (0: none)
    min_churn_risk: float = Field(0.5, gt=0, le=1)


# Share of a rule's would-be alerts held back as a control group when the rules file does not
# say (docs/alerts.md "Control groups"): marketing rules measure their uplift by default, support
# rules send every alert unless a team raises the share deliberately.
DEFAULT_CONTROL_SHARE: dict[AlertKind, float] = {AlertKind.marketing: 0.10, AlertKind.support: 0.0}


class _Rule(_Strict):
    enabled: bool = True
    kind: AlertKind
    # None = DEFAULT_CONTROL_SHARE of the rule's kind (see RuleSet.control_share).
    control_share: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _kind_matches(self) -> _Rule:
        rule_id = getattr(self, "id", "")
        expected = RULE_KINDS[rule_id]
        if self.kind is not expected:
            raise ValueError(f"rule {rule_id!r} is a {expected.value} rule, not {self.kind.value}")
        return self


class CartRecoveryRule(_Rule):
    id: Literal["cart_recovery"]
    cooldown_s: float = Field(6 * HOUR_S, ge=0)
    params: CartRecoveryParams = CartRecoveryParams()


class BrowseIntentRule(_Rule):
    id: Literal["browse_intent"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: BrowseIntentParams = BrowseIntentParams()


class WinBackRule(_Rule):
    id: Literal["win_back"]
    cooldown_s: float = Field(30 * DAY_S, ge=0)
    params: WinBackParams = WinBackParams()


class PromoterReferralRule(_Rule):
    id: Literal["promoter_referral"]
    cooldown_s: float = Field(30 * DAY_S, ge=0)
    params: PromoterReferralParams = PromoterReferralParams()


class DetractorFollowUpRule(_Rule):
    id: Literal["detractor_follow_up"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: DetractorFollowUpParams = DetractorFollowUpParams()


class RepeatContactRule(_Rule):
    id: Literal["repeat_contact"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: RepeatContactParams = RepeatContactParams()


class FrictionSpikeRule(_Rule):
    id: Literal["friction_spike"]
    cooldown_s: float = Field(HOUR_S, ge=0)
    params: FrictionSpikeParams = FrictionSpikeParams()


class ExperienceDropRule(_Rule):
    id: Literal["experience_drop"]
    cooldown_s: float = Field(DAY_S, ge=0)
    params: ExperienceDropParams = ExperienceDropParams()


class HighValueAtRiskRule(_Rule):
    id: Literal["high_value_at_risk"]
    cooldown_s: float = Field(7 * DAY_S, ge=0)
    params: HighValueAtRiskParams = HighValueAtRiskParams()


RuleConfig = Annotated[
    CartRecoveryRule
    | BrowseIntentRule
    | WinBackRule
    | PromoterReferralRule
    | DetractorFollowUpRule
    | RepeatContactRule
    | FrictionSpikeRule
    | ExperienceDropRule
    | HighValueAtRiskRule,
    Field(discriminator="id"),
]

RULE_KINDS: dict[str, AlertKind] = {
    "cart_recovery": AlertKind.marketing,
    "browse_intent": AlertKind.marketing,
    "win_back": AlertKind.marketing,
    "promoter_referral": AlertKind.marketing,
    "detractor_follow_up": AlertKind.support,
    "repeat_contact": AlertKind.support,
    "friction_spike": AlertKind.support,
    "experience_drop": AlertKind.support,
    "high_value_at_risk": AlertKind.support,
}
RULE_IDS: tuple[str, ...] = tuple(RULE_KINDS)


class QuietHours(_Strict):
    """Local wall-clock span (customer's time zone) without marketing; may wrap midnight."""

    start: time = time(21, 0)
    end: time = time(8, 0)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet_hours start and end must differ")
        return self


class PolicyConfig(_Strict):
    daily_cap: dict[AlertKind, int] = Field(
        default_factory=lambda: {AlertKind.marketing: 2, AlertKind.support: 3}
    )
    quiet_hours: QuietHours | None = QuietHours()
    open_support_alert_s: float = Field(2 * DAY_S, ge=0)
    negative_answer_s: float = Field(7 * DAY_S, ge=0)

    @model_validator(mode="after")
    def _caps_positive(self) -> PolicyConfig:
        for kind, cap in self.daily_cap.items():
            if cap < 0:
                raise ValueError(f"daily_cap for {kind.value} must be >= 0")
        return self


class RulesFile(_Strict):
    version: Literal[1]
    rules: list[RuleConfig]
    policy: PolicyConfig = PolicyConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule {rule.id!r} is listed twice")
            seen.add(rule.id)
        return self


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The validated rules: ``enabled`` maps rule id -> config for enabled rules only."""

    enabled: dict[str, Any]
    policy: PolicyConfig
    detractor: DetractorFollowUpParams  # thresholds also used for suppression and churn

    @classmethod
    def from_file_model(cls, model: RulesFile) -> RuleSet:
        by_id = {r.id: r for r in model.rules}
        det = by_id.get("detractor_follow_up")
        return cls(
            enabled={r.id: r for r in model.rules if r.enabled},
            policy=model.policy,
            detractor=det.params
            if isinstance(det, DetractorFollowUpRule)
            else DetractorFollowUpParams(),
        )

    def cooldown_s(self, rule_id: str) -> float:
        rule = self.enabled.get(rule_id)
        return float(rule.cooldown_s) if rule is not None else 0.0

    def control_share(self, rule_id: str) -> float:
        """The share of ``rule_id``'s alerts withheld as its control group (0 when disabled)."""
        rule = self.enabled.get(rule_id)
        if rule is None:
            return 0.0
        if rule.control_share is not None:
            return float(rule.control_share)
        return DEFAULT_CONTROL_SHARE[rule.kind]


def _describe(raw: Any, err: Any) -> str:
    loc = list(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        idx = loc[1]
        rule_id = "?"
        if isinstance(raw, dict) and isinstance(raw.get("rules"), list) and idx < len(raw["rules"]):
            item = raw["rules"][idx]
            rule_id = item.get("id", "?") if isinstance(item, dict) else "?"
        field_path = [str(p) for p in loc[2:] if p != rule_id]
        field = ".".join(field_path) or "(rule)"
        return f"rule {rule_id!r} (rules[{idx}]) field {field}: {err['msg']}"
    return f"field {where}: {err['msg']}"


def parse_rules(raw: Any, source: str = "<rules>") -> RuleSet:
    """Validate an already-decoded rules document (see :func:`load_rules`)."""
    try:
        model = RulesFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(raw, e) for e in exc.errors()[:5])
        raise RulesError(f"invalid rules file {source}: {problems}") from None
    return RuleSet.from_file_model(model)


def load_rules(path: Path | None = None) -> RuleSet:
    """Load and validate a rules file; ``None`` loads the shipped default_rules.json.

    Raises RulesError (a ValueError) if the file cannot be read, is not JSON, or does not
    validate; the message names the file, the rule id and the field.
    """
    path = path or DEFAULT_RULES_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise RulesError(f"rules file {path} is not valid JSON: {exc}") from None
    return parse_rules(raw, str(path))
