"""Alert rules, by concept (this module re-exports what the worker and tools import).

* :mod:`streams.core.rule_config`: the rules file, its models, :func:`load_rules`;
* :mod:`streams.core.rule_evaluators`: what makes each rule fire;
* :mod:`streams.core.rule_plan`: which rules an event can raise, and in which order.
"""

from streams.core.rule_config import (
    DEFAULT_RULES_PATH,
    RULE_IDS,
    RULE_KINDS,
    PolicyConfig,
    QuietHours,
    RulesError,
    RuleSet,
    load_rules,
    parse_rules,
)

__all__ = [
    "DEFAULT_RULES_PATH",
    "RULE_IDS",
    "RULE_KINDS",
    "PolicyConfig",
    "QuietHours",
    "RuleSet",
    "RulesError",
    "load_rules",
    "parse_rules",
]
