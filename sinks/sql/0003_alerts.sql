-- Every alert, deduplicated on alert_id (deterministic: a replay yields the same id, rule and
-- event_time, hence the same partition and sorting key). Count with FINAL or uniqExact(alert_id).
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id String,
    rule String,
    kind String,
    customer_id String,
    event_time DateTime('UTC'),
    emitted_at DateTime('UTC'),
    experience_score Float64,
    churn_risk Float64,
    explanation String,
    evidence Array(String),
    action String,
    context String,
    ingested_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (rule, alert_id);
