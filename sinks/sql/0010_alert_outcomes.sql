-- Outcomes per alert (docs/alerts.md "Outcomes"): for every alert, sent (control = 0) and
-- control (control = 1) alike, whether the customer did what its rule counts as success within
-- the rule's outcome window after the alert's event time:
--   cart_recovery, browse_intent           a purchase within 24 h
--   win_back, promoter_referral,
--   high_value_at_risk                     a purchase within 30 days
--   detractor_follow_up, experience_drop   a later answer to the same survey above the trigger's
--                                          score within 30 days, or no churn: the customer is
--                                          active (any event) after the alert's day, within 30 days
--   repeat_contact, friction_spike         no further support contact within 7 days
-- window_closed = 1 once event_time + window_s has passed (now(), at query time); only those
-- rows are final. A plain view (no window functions, USING joins only), so it runs on 18.16 and
-- on modern servers alike and is computed when read. Channel and segment are those of the
-- alert's latest evidence event (its trigger). 18.16 does not read a subquery column that only a
-- lambda uses: every such column (trigger_survey, trigger_score) is also named outside one.
CREATE VIEW IF NOT EXISTS {db}.alert_outcomes AS
SELECT
    alert_id, rule, kind, customer_id, event_time, control, channel, segment, window_s,
    trigger_survey, trigger_score,
    toUInt8(toUInt32(event_time) + window_s <= toUInt32(now())) AS window_closed,
    toUInt8(multiIf(
        rule IN ('cart_recovery', 'browse_intent', 'win_back', 'promoter_referral',
                 'high_value_at_risk'),
        arrayExists(t -> t > event_time AND toUInt32(t) <= toUInt32(event_time) + window_s,
                    purchase_times),
        rule IN ('repeat_contact', 'friction_spike'),
        NOT arrayExists(t -> t > event_time AND toUInt32(t) <= toUInt32(event_time) + window_s,
                        contact_times),
        rule IN ('detractor_follow_up', 'experience_drop'),
        (trigger_survey != '' AND trigger_score >= 0
         AND arrayExists((t, s, v) -> t > event_time
                                 AND toUInt32(t) <= toUInt32(event_time) + window_s
                                 AND s = trigger_survey AND v > trigger_score,
                    answer_times, answer_surveys, answer_scores))
        OR arrayExists(d -> d > toDate(event_time)
                            AND d <= toDate(toDateTime(toUInt32(event_time) + window_s)),
                       active_days),
        0)) AS success
FROM
(
    SELECT alert_id, rule, kind, customer_id, event_time, control, window_s, channel, segment,
        trigger_survey, trigger_score
    FROM
    (
        SELECT alert_id, rule, kind, customer_id, event_time, control,
            if(empty(evidence), '', evidence[length(evidence)]) AS trigger_event_id,
            toUInt32(multiIf(rule IN ('cart_recovery', 'browse_intent'), 86400,
                             rule IN ('repeat_contact', 'friction_spike'), 604800,
                             2592000)) AS window_s
        FROM {db}.alerts FINAL
    ) AS a
    ANY LEFT JOIN
    (
        SELECT event_id AS trigger_event_id, channel, segment,
            survey AS trigger_survey, score AS trigger_score
        FROM {db}.touchpoint_events
        WHERE event_id IN (SELECT arrayJoin(evidence) FROM {db}.alerts)
    ) AS t USING trigger_event_id
) AS at
ANY LEFT JOIN
(
    SELECT customer_id,
        groupArrayIf(occurred_at, event_type = 'purchase') AS purchase_times,
        groupArrayIf(occurred_at, event_type = 'support_contact') AS contact_times,
        groupArrayIf(occurred_at, event_type = 'survey_answer') AS answer_times,
        groupArrayIf(survey, event_type = 'survey_answer') AS answer_surveys,
        groupArrayIf(score, event_type = 'survey_answer') AS answer_scores,
        groupUniqArray(toDate(occurred_at)) AS active_days
    FROM {db}.touchpoint_events
    WHERE customer_id IN (SELECT customer_id FROM {db}.alerts)
    GROUP BY customer_id
) AS c USING customer_id;
