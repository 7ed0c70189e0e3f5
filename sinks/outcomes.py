"""The read side of control groups: outcomes per rule from the ``alert_outcomes`` view
(migration 0010) and the uplift of sent over withheld alerts with a 95 % confidence interval.

Only alerts whose outcome window has closed count (``window_closed = 1``); the others are
reported as ``pending``. The view reads ``alerts FINAL``, so a redelivered alert counts once.
Pure functions but for :func:`collect_outcomes`, whose ``execute(sql, params)`` is any callable
returning rows as tuples (clickhouse-driver's ``Client.execute``).

Statistics (docs/alerts.md "Reading the report"): success rates p1 (sent) and p0 (control);
absolute uplift p1 - p0 with Newcombe's hybrid score interval (method 10 of Newcombe 1998,
built from the two Wilson intervals: sound for small groups and rates near 0 or 1, unlike the
Wald interval); relative uplift p1 / p0 - 1 with the Katz log interval of the rate ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Execute = Callable[[str, Mapping[str, Any]], Sequence[Sequence[Any]]]

Z_95 = 1.959963984540054  # the 97.5 % quantile of the standard normal
MIN_GROUP = 30  # alerts per group below which the report says "too small to tell"
MIN_EVENTS = 5  # successes and failures per group below which the normal approximations fail

OUTCOME_CUTS: dict[str, str] = {"channel": "channel", "segment": "segment"}

# Rule -> (success, window): the definitions the view computes (kept here for the report's
# header and docs/alerts.md; tests/integration/test_outcomes.py checks the view against them).
OUTCOME_DEFINITIONS: dict[str, tuple[str, int]] = {
    "cart_recovery": ("purchase within 24 h", 86_400),
    "browse_intent": ("purchase within 24 h", 86_400),
    "win_back": ("purchase within 30 d", 2_592_000),
    "promoter_referral": ("purchase within 30 d", 2_592_000),
    "high_value_at_risk": ("purchase within 30 d", 2_592_000),
    "detractor_follow_up": ("better answer to the same survey, or active again, within 30 d",
                            2_592_000),
    "experience_drop": ("better answer to the same survey, or active again, within 30 d",
                        2_592_000),
    "repeat_contact": ("no further support contact within 7 d", 604_800),
    "friction_spike": ("no further support contact within 7 d", 604_800),
}


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) for an empty group."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference_interval(
    x1: int, n1: int, x0: int, n0: int, z: float = Z_95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p0 (independent groups)."""
    p1, p0 = x1 / n1, x0 / n0
    l1, u1 = wilson_interval(x1, n1, z)
    l0, u0 = wilson_interval(x0, n0, z)
    d = p1 - p0
    lower = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return max(-1.0, lower), min(1.0, upper)


def ratio_interval(x1: int, n1: int, x0: int, n0: int, z: float = Z_95
                   ) -> tuple[float, float] | None:
    """Katz log interval for the rate ratio p1 / p0; None when a group has no success."""
    if x1 == 0 or x0 == 0:
        return None
    ratio = (x1 / n1) / (x0 / n0)
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0)
    return ratio * math.exp(-z * se), ratio * math.exp(z * se)


def uplift(sent: int, sent_successes: int, withheld: int, withheld_successes: int
           ) -> dict[str, Any]:
    """Success rates of both groups, absolute and relative uplift with 95 % intervals, and a
    note: ``too small to tell`` when a group has fewer than MIN_GROUP alerts or fewer than
    MIN_EVENTS successes or failures; else ``uplift``, ``harm`` or ``no clear difference``
    by whether the absolute interval lies above 0, below 0, or contains it."""
    out: dict[str, Any] = {
        "sent": sent, "sent_successes": sent_successes,
        "withheld": withheld, "withheld_successes": withheld_successes,
        "sent_success_rate": sent_successes / sent if sent else None,
        "withheld_success_rate": withheld_successes / withheld if withheld else None,
        "uplift_abs": None, "uplift_abs_ci95": None,
        "uplift_rel": None, "uplift_rel_ci95": None,
    }
    if sent and withheld:
        p1, p0 = sent_successes / sent, withheld_successes / withheld
        out["uplift_abs"] = p1 - p0
        out["uplift_abs_ci95"] = list(
            newcombe_difference_interval(sent_successes, sent, withheld_successes, withheld))
        if p0 > 0:
            out["uplift_rel"] = p1 / p0 - 1
            ci = ratio_interval(sent_successes, sent, withheld_successes, withheld)
            out["uplift_rel_ci95"] = None if ci is None else [ci[0] - 1, ci[1] - 1]
    small = any(
        n < MIN_GROUP or x < MIN_EVENTS or n - x < MIN_EVENTS
        for n, x in ((sent, sent_successes), (withheld, withheld_successes))
    )
    if small:
        out["note"] = "too small to tell" if withheld or sent else "no alerts"
        if not withheld:
            out["note"] = "no control group (control_share 0?)"
    else:
        low, high = out["uplift_abs_ci95"]
        out["note"] = "uplift" if low > 0 else "harm" if high < 0 else "no clear difference"
    return out


def required_per_group(p0: float, uplift_abs: float, *, z_alpha: float = Z_95,
                       z_power: float = 0.8416212335729143) -> int:
    """Alerts needed in EACH group to detect ``uplift_abs`` over base rate ``p0`` with a
    two-sided 5 % test and 80 % power (normal approximation, equal groups):
    n = (z_a * sqrt(2 p (1-p)) + z_b * sqrt(p0 (1-p0) + p1 (1-p1)))^2 / d^2, p = (p0+p1)/2."""
    p1 = p0 + uplift_abs
    if not 0 < p0 < 1 or not 0 < p1 < 1 or uplift_abs == 0:
        raise ValueError("need 0 < p0, p0 + uplift < 1 and uplift != 0")
    p = (p0 + p1) / 2
    root = (z_alpha * math.sqrt(2 * p * (1 - p))
            + z_power * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1)))
    return math.ceil(root * root / (uplift_abs * uplift_abs))


def outcomes_sql(database: str, by: str | None) -> str:
    """Closed and pending alerts and successes per rule (and cut) and group."""
    if by is not None and by not in OUTCOME_CUTS:
        raise ValueError(f"--by must be one of {', '.join(OUTCOME_CUTS)}, got {by!r}")
    cut = "''" if by is None else OUTCOME_CUTS[by]
    return (
        f"SELECT rule, {cut} AS cut, control,\n"
        "    sum(window_closed) AS closed,\n"
        "    sum(window_closed * success) AS successes,\n"
        "    sum(1 - window_closed) AS pending\n"
        f"FROM {database}.alert_outcomes\n"
        "WHERE event_time >= toDateTime(%(since_s)s) AND event_time < toDateTime(%(until_s)s)\n"
        "GROUP BY rule, cut, control ORDER BY rule, cut, control"
    )


def outcome_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows of :func:`outcomes_sql` -> one entry per rule and cut with :func:`uplift`."""
    groups: dict[tuple[str, str], dict[int, tuple[int, int, int]]] = {}
    for rule, cut, control, closed, successes, pending in rows:
        groups.setdefault((str(rule), str(cut)), {})[int(control)] = (
            int(closed), int(successes), int(pending))
    entries = []
    for (rule, cut), by_group in sorted(groups.items()):
        n1, x1, pend1 = by_group.get(0, (0, 0, 0))
        n0, x0, pend0 = by_group.get(1, (0, 0, 0))
        definition = OUTCOME_DEFINITIONS.get(rule, ("?", 0))
        entries.append({"rule": rule, "cut": cut, "success": definition[0],
                        "window_s": definition[1], "pending": pend1 + pend0,
                        **uplift(n1, x1, n0, x0)})
    return entries


def collect_outcomes(execute: Execute, *, database: str, since_s: int, until_s: int,
                     by: str | None = None) -> dict[str, Any]:
    """Everything ``cxsignals report outcomes`` prints, as plain data (JSON-ready)."""
    params = {"since_s": since_s, "until_s": until_s}
    return {
        "window": {"since_s": since_s, "until_s": until_s},
        "by": by,
        "rules": outcome_rows(execute(outcomes_sql(database, by), params)),
    }
