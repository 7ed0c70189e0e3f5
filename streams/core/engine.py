"""The engine: one customer event in, new state + score update + alerts out. No I/O.

``Engine.process`` is what the Faust agent calls for every touchpoint of a customer, and
``Engine.tick`` what its timer calls for customers with a pending deadline. Both are pure
functions of (state, event, rules, config) except for ``now``, the injected wall clock, which is
used only for ``emitted_at``/``updated_at``, for the lag estimate behind ``tick`` and never for
scoring. A replay of the same events into a fresh state therefore yields the same scores and the
same alert ids.

Guarantees:
* Redelivery: an event id already in the state's recent-id record is a no-op
  (``duplicate=True``). Ids are remembered while their event time is within the grace period of
  the watermark (at least the last 256, at most 512); an id forgotten earlier belongs to an event
  beyond grace, which is a no-op anyway (``late_dropped=True``).
* Late events: an event older than ``watermark - grace_s`` changes nothing
  (``late_dropped=True``, the agent counts it). Within grace it is applied at its event time.
* The state object passed in is mutated and returned in ``Outcome.state``; the caller must
  persist it (``to_bytes``) before committing the event's offset.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

from schemas.event_records import (
    CartAbandonEvent,
    CheckoutStartedEvent,
    Event,
    PageViewEvent,
    PurchaseEvent,
    SupportContactEvent,
    SurveyAnswerEvent,
    from_model,
)
from schemas.events import EVENT_TYPES, EventBase, JourneyStage, derive_stage
from streams.core import policy
from streams.core.alert_ids import ALERT_NAMESPACE, alert_id
from streams.core.alerting import Alerting
from streams.core.churn import ChurnScorer
from streams.core.engine_config import EngineConfig
from streams.core.idle_risk import RiskWakeups, risk_thresholds
from streams.core.outcome import Outcome
from streams.core.rule_config import CartRecoveryRule, RuleSet
from streams.core.rule_evaluators import idle_candidates, is_negative_answer
from streams.core.rule_plan import evaluate_event, page_view_plan_key, rule_plan
from streams.core.scoring import (
    NEUTRAL,
    SATURATION_POINTS,
    add_signals,
    current_stage_value,
)
from streams.core.seen_ids import id_key
from streams.core.sentiment import SentimentAnalyzer, comment_sentiment
from streams.core.signals import Signal, error_kind, event_signals
from streams.core.state import (
    MAX_CONTACTS,
    MAX_ERRORS,
    MAX_PENDING_CARTS,
    MAX_SEEN_IDS,
    MAX_VIEWS,
    MIN_SEEN_IDS,
    CustomerState,
    event_id_hash,
    short_hash,
)
from streams.core.windows import (
    DAY_S,
    HOUR_S,
    bucket_prune,
    timed_between,
    timed_insert,
    timed_prune,
)

ACTIVITY_DAYS: Final = 35  # 7-day trend window + 28-day baseline
SCORE_HOURS: Final = 24  # experience_drop looks back at most 24 h
CONTACT_RETENTION_S: Final = 7 * DAY_S  # unresolved contacts count for churn for 7 days
_NEG_INF: Final = -math.inf
_NO_SIGNALS: Final[list[Signal]] = []  # never mutated
# derive_stage of a page view, by whether it names a product
_PAGE_VIEW_STAGE: Final = (JourneyStage.awareness._value_, JourneyStage.consideration._value_)


class Engine:
    """Scores, rules and alert policy for one customer at a time (thread-compatible, no I/O)."""

    def __init__(self, config: EngineConfig, rules: RuleSet, sentiment: SentimentAnalyzer) -> None:
        self.config = config
        self.rules = rules
        self.sentiment = sentiment
        self._half_life_s = config.half_life_s
        cart = rules.enabled.get("cart_recovery")
        self._cart_rule: CartRecoveryRule | None = (
            cart if isinstance(cart, CartRecoveryRule) else None
        )
        # How far back late events reach into each timed list, plus the rule window.
        self._error_keep_s = config.grace_s + 2 * self._rule_window_s("friction_spike", 3600.0)
        self._view_keep_s = config.grace_s + self._rule_window_s("browse_intent", 3600.0)
        repeat = rules.enabled.get("repeat_contact")
        repeat_s = repeat.params.window_hours * HOUR_S if repeat is not None else DAY_S
        self._contact_keep_s = max(CONTACT_RETENTION_S, repeat_s + config.grace_s, DAY_S)
        self._plan = rule_plan(rules, EVENT_TYPES)
        # [has product][is a 5xx] -> plan key
        self._page_view_plans = tuple(
            tuple(page_view_plan_key(product, error) for error in (False, True))
            for product in (False, True)
        )
        self._slow_load_ms = config.weights.slow_load_ms
        self._publish_step = config.score_publish_step
        self._alerting = Alerting(config, rules, self._cart_rule)
        # Read on every event: plain attributes rather than property/config look-ups.
        self._grace_s = config.grace_s
        self._weights = config.weights
        self._churn_risk = ChurnScorer(
            config.churn_model, config.churn, config.churn_horizon_days
        )
        self._risk_wakeups: RiskWakeups | None = (
            RiskWakeups(self._churn_risk, risk_thresholds(rules.enabled),
                        config.score_publish_step, config.idle_risk_horizon_days * DAY_S)
            if config.idle_risk_horizon_days > 0
            else None
        )

    def _rule_window_s(self, rule_id: str, default_s: float) -> float:
        rule = self.rules.enabled.get(rule_id)
        return rule.params.window_minutes * 60 if rule is not None else default_s

    # ------------------------------------------------------------------ public API

    def process(
        self,
        state: CustomerState | None,
        customer_id: str,
        event: Event | EventBase,
        *,
        now: datetime,
    ) -> Outcome:
        """Apply one event of ``customer_id``. See the module docstring for the guarantees.

        ``event``: what ``validate_event`` returns; a pydantic contract model is converted first.
        """
        if not isinstance(event, Event):
            event = from_model(event)
        # This runs for every event the worker consumes: moving the watermark (decaying the
        # score sum), the bucket updates, the stage record and the score formula are written
        # inline rather than as small helpers.
        st = state if state is not None else CustomerState()
        # An event stamped ahead of the wall clock (within the allowed skew: a clock upstream
        # runs fast) happens at receipt: the customer's event-time clock never passes the wall
        # clock, so the customer's next on-time events are not late because of it.
        t = event.occurred_at.timestamp()
        now_s = now.timestamp()
        if t > now_s:
            t = now_s
        key = id_key(event_id_hash(event.event_id))  # stored form, computed once
        seen = st.seen
        if seen.has_key(key):
            return Outcome(st, duplicate=True)
        w0 = st.watermark
        if w0 is not None and t < w0 - self._grace_s:
            return Outcome(st, late_dropped=True)
        out = Outcome(st)
        st.risk_wake_s = None  # the state changes: its risk schedule is recomputed
        if w0 is None or t >= w0:
            lag = now_s - t
            st.lag_s = lag if lag > 0.0 else 0.0  # max(0.0, lag)
            tz = event.timezone
            if tz and tz != st.timezone and policy.is_valid_zone(tz):
                st.timezone = tz
            if event.segment:
                st.segment = event.segment
        if w0 is not None and t > w0:
            # Deadlines that fell strictly before this event happened before it.
            pc, df = st.pending_carts, st.deferred
            if (pc and pc[0][0] < t) or (df and df[0][0] < t):
                self._alerting.release(st, customer_id, t, False, now, out)
        hourly = st.score_hourly
        if not hourly:
            hourly[int(t // HOUR_S)] = st.score  # a new customer starts neutral
        score_before, risk_before, spend_before = st.score, st.risk, st.spend
        # Move the watermark: the score sum is referenced to it, so it decays by the gap.
        if w0 is None:
            st.watermark = w = t
        elif t > w0:
            st.score_sum *= 2.0 ** (-(t - w0) / self._half_life_s)
            st.watermark = w = t
        else:
            w = w0
        if st.first_seen is None or t < st.first_seen:
            st.first_seen = t
        seen.add_key(key, int(t))
        if len(seen) > MIN_SEEN_IDS:
            # Forget the oldest-added ids once beyond grace, keeping at least MIN_SEEN_IDS and
            # at most MAX_SEEN_IDS (an id that arrived out of order behind a newer one is
            # forgotten when it reaches the front).
            seen.prune(w - self._grace_s, MIN_SEEN_IDS, MAX_SEEN_IDS)

        sentiment = None
        product_key = None
        event_type: str = getattr(event, "event_type", "")
        js = event.journey_stage
        if isinstance(event, PageViewEvent):
            # Most events are page views: their signals, stage and memory are done here.
            pp = event.properties
            status = pp.http_status
            load = pp.load_time_ms
            signals: list[Signal] = (
                event_signals(event, self._weights)
                if (status is not None and status >= 400)
                or (load is not None and load >= self._slow_load_ms)
                else _NO_SIGNALS  # what event_signals returns for a clean page view
            )
            product = pp.product_id
            error = status is not None and status >= 500
            if product is not None:
                product_key = short_hash(product)
                st.views.insert(t, event.event_id, product_key, MAX_VIEWS)
            if error:
                timed_insert(st.errors, (t, event.event_id, "error_page"), MAX_ERRORS)
            # event.stage: the stated stage, else derive_stage's for a page view
            stage = js._value_ if js is not None else _PAGE_VIEW_STAGE[product is not None]
            plan_key = self._page_view_plans[product is not None][error]
        else:
            repeated = False
            if isinstance(event, SurveyAnswerEvent):
                sentiment = comment_sentiment(self.sentiment, event.properties.comment)
            elif isinstance(event, SupportContactEvent):
                repeated = bool(timed_between(st.contacts, t - DAY_S, t))
            signals = event_signals(
                event, self._weights, repeated_contact=repeated, sentiment=sentiment
            )
            self._apply_facts(st, event, event_type, t, sentiment)
            stage = (js or derive_stage(event))._value_  # type: ignore[arg-type]  # event.stage
            plan_key = event_type
        daily = st.activity_daily
        if signals:
            add_signals(st, t, event.event_id, signals, self._half_life_s)
            if event_type == "survey_answer" or all(x >= 0 for _n, x in signals):
                day = int(t // DAY_S)
                daily[day] = daily.get(day, 0.0) + 1.0
        else:  # friction is not activity
            day = int(t // DAY_S)
            daily[day] = daily.get(day, 0.0) + 1.0
        stage_seen = st.stage_seen
        if stage_seen.get(stage, _NEG_INF) < t:
            stage_seen[stage] = t
        self._prune(st, w, w0)

        # 0-100, 50 = neutral, about one point per point of score_sum near neutral
        score = NEUTRAL + NEUTRAL * math.tanh(st.score_sum / SATURATION_POINTS)
        risk = self._churn_risk(st, score)
        peak = score_before
        if score < score_before:
            oldest = int(w // HOUR_S) - SCORE_HOURS
            for k, v in hourly.items():
                if k >= oldest and v > peak:
                    peak = v
        candidates = evaluate_event(
            self._plan[plan_key],
            st,
            event,
            t,
            sentiment,
            score_before,
            score,
            peak,
            risk_before,
            risk,
            spend_before,
            product_key,
            self._churn_risk,
        )
        hour = int(w // HOUR_S)  # the hour's highest score
        old = hourly.get(hour)
        if old is None or score > old:
            hourly[hour] = score
        st.score, st.risk = score, risk
        st.stage = stage = current_stage_value(st)
        # The explanation is built at most once, and only if an alert or update needs it.
        explain = None
        if candidates:
            explain = self._alerting.explainer(st)
            for cand in candidates:
                self._alerting.decide(st, customer_id, cand, now, out, explain)
        pc, df = st.pending_carts, st.deferred
        if (pc and pc[0][0] <= w) or (df and df[0][0] <= w):
            self._alerting.release(st, customer_id, w, True, now, out, explain)
        # A score update when score or risk*100 moved more than the step, or the stage changed.
        pub_score, pub_risk, step = st.pub_score, st.pub_risk, self._publish_step
        if (
            pub_score is None
            or pub_risk is None
            or not abs(score - pub_score) <= step
            or not abs(risk - pub_risk) * 100 <= step
            or stage != st.pub_stage
        ):
            out.score_update = self._alerting.score_update(
                st, customer_id, now, explain, clv_12m=self._churn_risk.clv(st)
            )
        return out

    def tick(
        self, state: CustomerState, customer_id: str, *, now: datetime, idle_risk: bool = True
    ) -> Outcome:
        """Fire deadlines of an idle customer: cart recoveries due and deferred alerts released;
        then (unless ``idle_risk`` is False) re-evaluate its churn risk as of now
        (:meth:`reevaluate_risk`).

        For deadlines the customer's event-time clock is estimated as ``now - state.lag_s`` (the
        lag of its last in-order event), so live traffic fires on time while a replay or
        backfill, whose events are far behind wall time, is not overtaken by its own timer.
        """
        out = Outcome(state)
        if state.watermark is None:
            return out
        self._alerting.release(state, customer_id, now.timestamp() - state.lag_s, True, now, out)
        if idle_risk and self._risk_wakeups is not None:
            self.reevaluate_risk(state, customer_id, now, out)
        return out

    def reevaluate_risk(
        self, st: CustomerState, customer_id: str, now: datetime, out: Outcome
    ) -> None:
        """The churn risk of an idle customer as of ``at_s = max(now, watermark)`` (wall clock:
        how long the customer has really been away; never before the last event). Raises
        ``high_value_at_risk`` and ``win_back`` when it crossed their thresholds (through the
        policy: cooldowns, caps, quiet hours, with the inactivity as the reason) and publishes
        a score update (``event_time`` = ``at_s``) when it moved more than the publish step.
        The experience score is left as of the last event."""
        st.risk_wake_s = None  # the caller schedules the next look (risk_wakeup_s)
        w = st.watermark
        assert w is not None
        now_s = now.timestamp()
        at_s = now_s if now_s > w else w
        risk_before = st.risk
        risk = self._churn_risk(st, st.score, at_s)
        if risk == risk_before:
            return
        st.risk = risk
        explain = None
        churn = self._churn_risk
        candidates = idle_candidates(st, self.rules.enabled, at_s, risk_before, risk,
                                     lambda: churn.clv(st, at_s))
        if candidates:
            explain = self._alerting.explainer(st)
            for cand in candidates:
                self._alerting.decide(st, customer_id, cand, now, out, explain)
        pub_risk = st.pub_risk
        if pub_risk is None or not abs(risk - pub_risk) * 100 <= self._publish_step:
            out.score_update = self._alerting.score_update(st, customer_id, now, explain, at_s,
                                                           clv_12m=churn.clv(st, at_s))

    def risk_wakeup_s(self, state: CustomerState, now_s: float) -> float | None:
        """When :meth:`tick` should next re-evaluate the risk of ``state`` if nothing else
        happens (wall-clock epoch seconds, >= ``now_s``; inf: not within the horizon), or None
        when time-aware risk is off. Costs up to 19 churn-risk evaluations
        (:mod:`streams.core.idle_risk`): for the timer's path, after a look."""
        if self._risk_wakeups is None:
            return None
        return self._risk_wakeups.next_wakeup_s(state, now_s)

    def risk_first_look_s(self, state: CustomerState, now_s: float) -> float | None:
        """When to first look at the risk of a state that events changed (at most one
        churn-risk evaluation; see ``RiskWakeups.first_look_s``), or None when time-aware
        risk is off."""
        if self._risk_wakeups is None:
            return None
        return self._risk_wakeups.first_look_s(state, now_s)

    # ------------------------------------------------------------------ internals

    def _apply_facts(
        self,
        st: CustomerState,
        event: Event,
        event_type: str,
        t: float,
        sentiment: float | None,
    ) -> None:
        """Update the per-type memory (purchases, carts, contacts, errors, answers).

        Page views (views and error pages) are done in ``process``.
        """
        if isinstance(event, PurchaseEvent):
            value = event.properties.order_value
            day = t // DAY_S
            first = st.first_purchase
            if st.purchases and not st.purchase_days:  # a state from before purchase_days
                st.purchase_days, st.first_day_spend = st.purchases, st.spend / st.purchases
            if first is None:
                st.purchase_days, st.first_day_spend = 1, value
            elif day == first // DAY_S:
                st.first_day_spend += value
            elif st.last_purchase is None or day != st.last_purchase // DAY_S:
                # Late events reach back at most grace_s (1 h by default): a purchase on neither
                # the first nor the last purchase day is on a new day. (With a grace of days, a
                # late purchase on an earlier repeat day would count that day twice.)
                st.purchase_days += 1
                if t < first:
                    st.first_day_spend = value
            st.purchases += 1
            st.spend += value
            st.first_purchase = t if st.first_purchase is None else min(st.first_purchase, t)
            if st.last_purchase is None or t >= st.last_purchase:
                st.last_purchase = t
                st.last_purchase_id = event.event_id
            st.last_cart = t if st.last_cart is None else max(st.last_cart, t)
            # A purchase within the wait cancels every cart abandoned before it.
            if st.pending_carts:
                st.pending_carts = [c for c in st.pending_carts if not c[1] <= t <= c[0]]
        elif isinstance(event, CheckoutStartedEvent):
            st.last_cart = t if st.last_cart is None else max(st.last_cart, t)
        elif isinstance(event, CartAbandonEvent):
            st.last_cart = t if st.last_cart is None else max(st.last_cart, t)
            rule = self._cart_rule
            p = event.properties
            if rule is not None and p.cart_value >= rule.params.min_cart_value:
                due = t + rule.params.wait_minutes * 60
                bought = st.last_purchase is not None and t <= st.last_purchase <= due
                if not bought:
                    rec = (due, t, event.event_id, p.cart_id, p.cart_value, p.currency)
                    timed_insert(st.pending_carts, rec, MAX_PENDING_CARTS)
        elif isinstance(event, SupportContactEvent):
            sp = event.properties
            rec_c = (t, sp.resolved, event.event_id, sp.contact_id, sp.reason)
            timed_insert(st.contacts, rec_c, MAX_CONTACTS)
        elif isinstance(event, SurveyAnswerEvent):
            if is_negative_answer(event, sentiment, self.rules.detractor) and (
                st.last_negative is None or t > st.last_negative
            ):
                st.last_negative = t
        else:
            kind = error_kind(event)  # app errors and payment failures
            if kind is not None:
                timed_insert(st.errors, (t, event.event_id, kind), MAX_ERRORS)

    def _prune(self, st: CustomerState, w: float, w0: float | None) -> None:
        """Drop what fell out of every window. Buckets only move when the hour turns.

        A customer's first event (``w0`` None) has nothing to drop: every bucket and counter
        was just created at ``w``.
        """
        hour = int(w // HOUR_S)
        if w0 is not None and hour != int(w0 // HOUR_S):
            bucket_prune(st.activity_daily, int(w // DAY_S) - ACTIVITY_DAYS)
            bucket_prune(st.score_hourly, hour - SCORE_HOURS - 1)
            if st.daily_counts:
                policy.prune_counts(st, w)
        # timed_prune, with its no-op test (the oldest item is recent enough) done here. The
        # lists are read as Any records: compiled code would check every field's type to
        # unpack a typed record only to read its time.
        items: list[Any] = st.contacts
        if items and items[0][0] < w - self._contact_keep_s:
            timed_prune(items, w - self._contact_keep_s)
        items = st.errors
        if items and items[0][0] < w - self._error_keep_s:
            timed_prune(items, w - self._error_keep_s)
        st.views.prune(w - self._view_keep_s)


__all__ = ["ALERT_NAMESPACE", "Engine", "EngineConfig", "Outcome", "alert_id"]
