-- Hourly KPI rollup for dashboards, cut by channel, touchpoint, journey_stage, segment and
-- currency (so that revenue is never summed across currencies). Fed by a materialized view on
-- every insert into touchpoint_events: the view sees an insert before the engine deduplicates,
-- so a batch that is delivered twice (crash or rebalance between the insert and the offset
-- commit) is counted twice here. Exact KPIs are read from touchpoint_events FINAL instead; see
-- docs/clickhouse.md. Rows are summed by merges: always read with sum() ... GROUP BY.
CREATE TABLE IF NOT EXISTS {db}.touchpoint_rollup_hourly
(
    hour DateTime('UTC'),
    channel String,
    touchpoint String,
    journey_stage String,
    segment String,
    currency String,
    events UInt64,
    nps_promoters UInt64,
    nps_passives UInt64,
    nps_detractors UInt64,
    csat_sum UInt64,
    csat_count UInt64,
    csat_4_5 UInt64,
    ces_sum UInt64,
    ces_count UInt64,
    ces_5_7 UInt64,
    sentiment_sum Float64,
    sentiment_count UInt64,
    checkouts_started UInt64,
    carts_abandoned UInt64,
    purchases UInt64,
    revenue Float64,
    payment_failures UInt64,
    app_errors UInt64,
    support_contacts UInt64,
    support_resolved UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, channel, touchpoint, journey_stage, segment, currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.touchpoint_rollup_hourly_mv
TO {db}.touchpoint_rollup_hourly
AS SELECT
    toStartOfHour(occurred_at) AS hour,
    channel,
    touchpoint,
    journey_stage,
    segment,
    currency,
    count() AS events,
    countIf(survey = 'nps' AND score >= 9) AS nps_promoters,
    countIf(survey = 'nps' AND score >= 7 AND score <= 8) AS nps_passives,
    countIf(survey = 'nps' AND score <= 6) AS nps_detractors,
    sumIf(toUInt64(score), survey = 'csat') AS csat_sum,
    countIf(survey = 'csat') AS csat_count,
    countIf(survey = 'csat' AND score >= 4) AS csat_4_5,
    sumIf(toUInt64(score), survey = 'ces') AS ces_sum,
    countIf(survey = 'ces') AS ces_count,
    countIf(survey = 'ces' AND score >= 5) AS ces_5_7,
    sumIf(toFloat64(sentiment), has_sentiment = 1) AS sentiment_sum,
    countIf(has_sentiment = 1) AS sentiment_count,
    countIf(event_type = 'checkout_started') AS checkouts_started,
    countIf(event_type = 'cart_abandon') AS carts_abandoned,
    countIf(event_type = 'purchase') AS purchases,
    sumIf(order_value, event_type = 'purchase') AS revenue,
    countIf(event_type = 'payment_failed') AS payment_failures,
    countIf(event_type = 'app_error') AS app_errors,
    countIf(event_type = 'support_contact') AS support_contacts,
    countIf(event_type = 'support_contact' AND resolved = 1) AS support_resolved
FROM {db}.touchpoint_events
GROUP BY hour, channel, touchpoint, journey_stage, segment, currency;
